//! RTP, RTCP and SRTP for rtcdn.
pub mod srtp;
