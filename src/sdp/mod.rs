//! SDP offer/answer for WHIP/WHEP and rtcdn's own client side (on sdp-types).
