#!/usr/bin/env python3
"""Writes small valid tar and tar.gz seeds for the tar_extract and base_layer
targets. A fuzzer rarely forges a tar header checksum by itself, so without
valid seeds it only ever explores the rejection of bad headers."""
import gzip
import io
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def entry(t, name, kind="file", data=b"", link="", mode=0o644, fmt=None):
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    ti.mtime = 0
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
    elif kind == "sym":
        ti.type = tarfile.SYMTYPE
        ti.linkname = link
    elif kind == "hard":
        ti.type = tarfile.LNKTYPE
        ti.linkname = link
    elif kind == "fifo":
        ti.type = tarfile.FIFOTYPE
    else:
        ti.size = len(data)
    t.addfile(ti, io.BytesIO(data) if kind == "file" else None)


def archive(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=fmt)
    for e in entries:
        entry(t, *e)
    end = t.offset
    t.close()
    # Two zero blocks end the archive; the rest of tarfile's padding is noise.
    return buf.getvalue()[:end] + bytes(1024)


SEEDS = {
    "basic": [("etc", "dir"), ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
              ("bin/busybox", "file", b"\x7fELF"), ("bin/sh", "sym", b"", "busybox"),
              ("bin/ls", "hard", b"", "bin/busybox")],
    "whiteouts": [("etc/.wh.passwd", "file"), ("var/.wh..wh..opq", "file"),
                  ("var/lib/x", "file", b"x"), (".wh.bin", "file")],
    "escapes": [("../evil", "file", b"e"), ("/abs/file", "file", b"a"),
                ("a/../../b", "file", b"b"), ("out", "sym", b"", "/../../etc"),
                ("out/x", "file", b"x"), ("up", "sym", b"", "../../.."), ("up/y", "file", b"y"),
                ("h", "hard", b"", "../outside")],
    "dirs-over-files": [("a", "file", b"1"), ("a/b", "file", b"2"), ("a", "dir"),
                        ("./c/./d", "file", b"3"), ("c", "sym", b"", "a"), ("c/e", "file", b"4"),
                        ("p", "fifo")],
    "long-names": [("d/" + "n" * 200 + "/f", "file", b"long"), ("l", "sym", b"", "t" * 150)],
}


def main():
    for target in ("tar_extract", "base_layer"):
        out = os.path.join(HERE, target)
        os.makedirs(out, exist_ok=True)
        for name, entries in SEEDS.items():
            for fmt, tag in ((tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")):
                raw = archive(entries, fmt)
                with open(os.path.join(out, f"{name}-{tag}.tar"), "wb") as f:
                    f.write(raw)
            gz = gzip.compress(archive(entries), mtime=0)
            with open(os.path.join(out, f"{name}.tar.gz"), "wb") as f:
                f.write(gz)


if __name__ == "__main__":
    main()
