//! RTP, RTCP and SRTP for rtcdn.
