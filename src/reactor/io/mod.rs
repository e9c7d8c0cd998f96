//! UDP I/O backends for a media core: io_uring and recvmmsg/sendmmsg on epoll.
