//! rtcdn: a real-time WebRTC CDN node.
