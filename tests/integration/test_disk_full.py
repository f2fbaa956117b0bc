#!/usr/bin/python3
"""test_disk_full: ringkv-server on a small file system that fills up — SETs past the
end get a clear error reply, reads keep working, the server stays up, and after a
restart every acknowledged write is there.  Needs root and a loop device (skips
without them)."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as t  # noqa: E402


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        print("needs root and mkfs.ext4 (loop-mounted file system)")
        return 77
    tmp = tempfile.mkdtemp(prefix="ringkv-diskfull.")
    image, mnt = os.path.join(tmp, "fs.img"), os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    with open(image, "wb") as f:
        f.truncate(48 << 20)
    if sh("mkfs.ext4", "-q", "-F", image).returncode != 0 or \
            sh("mount", "-o", "loop", image, mnt).returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        print("cannot loop-mount an ext4 image here")
        return 77
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL:", what)

    try:
        data = os.path.join(mnt, "data")
        os.makedirs(data)
        srv = t.Server(durability="fsync", sets={"storage.segment_size": "4mb"},
                       data_dir=data)
        srv.start()
        c = srv.client()
        acked, error = {}, None
        value = b"v" * 8000
        for i in range(20000):
            key = b"full:%d" % i
            r = c.call("SET", key, value + b"%d" % i)
            if isinstance(r, t.Err):  # the error reply of the write that found no room
                error = r.msg
                break
            acked[key] = value + b"%d" % i
        check(error is not None, "the file system never filled up")
        check(error is not None and "file system is full" in error,
              f"disk-full error reply names the cause: {error!r}")
        check(len(acked) > 100, f"only {len(acked)} writes before the disk filled")
        print(f"{len(acked)} SETs acknowledged, then: {error}")
        # Reads keep working, and so do further writes' error replies.
        check(c.call("GET", b"full:0") == acked.get(b"full:0"), "GET after the disk filled")
        check(c.call("PING") == t.S("PONG"), "PING after the disk filled")
        r = c.call("SET", b"one-more", value)
        check(isinstance(r, t.Err) and "file system is full" in r.msg,
              f"a second SET on the full disk: {r!r}")
        check(srv.stop() == 0, "exit status after SIGTERM on a full disk")
        # Every acknowledged write survives a restart.
        srv.start()
        c = srv.client()
        lost = [k for k, v in acked.items() if c.call("GET", k) != v]
        check(not lost, f"{len(lost)} acknowledged writes lost after restart, e.g. {lost[:3]}")
        check(srv.stop() == 0, "exit status after the restart")
        if failures:
            print(srv.log())
        srv.cleanup()
    finally:
        sh("umount", mnt)
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
