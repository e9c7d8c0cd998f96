"""Groups the samples of a `perf record -g` file by what their stack shows they were doing."""
import collections
import subprocess
import sys

# First match wins; the loopback delivery runs inside the send path, so it is tested first.
CLASSES = [
    ("user: AES-GCM (ring)", lambda leaf, s: "aes_gcm" in leaf or "gcm_ghash" in leaf),
    ("kernel: loopback delivery to the receivers' sockets",
     lambda leaf, s: any(k in s for k in ["net_rx_action", "process_backlog", "__netif_receive_skb", "do_softirq"])),
    ("kernel: UDP send path",
     lambda leaf, s: any(k in s for k in ["udp_sendmsg", "ip_make_skb", "ip_finish_output", "loopback_xmit",
                                          "____sys_sendmsg", "__sys_sendmsg", "io_sendmsg", "ip_route_output",
                                          "__ip_append_data", "sock_alloc_send"])),
    ("kernel: UDP receive", lambda leaf, s: any(k in s for k in ["io_recvmsg", "udp_recvmsg", "io_recv", "__skb_recv"])),
    ("kernel: waits and wake-ups",
     lambda leaf, s: any(k in s for k in ["schedule", "finish_task_switch", "io_cqring_wait", "try_to_wake"])),
    ("kernel: io_uring submission/completion",
     lambda leaf, s: any(k in s for k in ["io_submit_sqes", "io_issue_sqe", "io_uring", "io_msg_copy_hdr", "__io_"])),
    ("kernel: other", lambda leaf, s: any(k in s for k in ["entry_SYSCALL", "do_syscall", "asm_sysvec", "irq"])),
    ("user: SRTP other than AES", lambda leaf, s: "srtp" in s.lower()),
    ("user: rtcdn and the rest", lambda leaf, s: True),
]


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    stack = []
    for line in out.splitlines():
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        parts = line.split(None, 1)
        stack.append(parts[1] if len(parts) > 1 else "?")
    if stack:
        yield stack


def main():
    counts = collections.Counter()
    for stack in samples(sys.argv[1]):
        joined = " ".join(stack)
        counts[next(name for name, test in CLASSES if test(stack[0], joined))] += 1
    total = sum(counts.values())
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
