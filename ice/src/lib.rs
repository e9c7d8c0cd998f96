//! STUN and ICE for rtcdn.
