#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Build guest.sh's initramfs: an uncompressed newc cpio archive with
busybox, the writer, /init, and the kernel modules named on the command
line together with what they depend on (from modules.dep, as depmod -b made
it in the kit), in load order.  Written directly, so no root is needed for
the device node /dev/console.

    mkinitramfs.py OUT BUSYBOX WRITER INIT MODDIR MODULE...
"""
import lzma
import os
import sys


def deps_in_order(moddir, names):
    dep = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            dep[mod] = rest.split()
    by_name = {}
    for mod in dep:
        base = os.path.basename(mod).split(".ko")[0]
        by_name[base.replace("-", "_")] = mod
    order = []

    def visit(mod):
        if mod in order:
            return
        for d in dep[mod]:
            visit(d)
        order.append(mod)

    for n in names:
        mod = by_name.get(n.replace("-", "_"))
        if mod is None:
            sys.exit(f"mkinitramfs: no module {n} in {moddir}/modules.dep")
        visit(mod)
    return order


class Cpio:
    def __init__(self, f):
        self.f, self.ino = f, 1

    def entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.f.write(hdr.encode() + name_b)
        self.f.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.f.write(data)
        self.f.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self.entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self.entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self.entry(name, 0o120777, target.encode())

    def trailer(self):
        self.entry("TRAILER!!!", 0)


def main(argv):
    out, busybox, writer, init, moddir, *mods = argv[1:]
    order = deps_in_order(moddir, mods)
    with open(out, "wb") as f:
        c = Cpio(f)
        for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "sbin", "usr", "usr/bin", "usr/sbin"):
            c.dir(d)
        c.entry("dev/console", 0o020600, rdev=(5, 1))
        c.file("bin/busybox", open(busybox, "rb").read(), 0o755)
        c.symlink("bin/sh", "busybox")
        c.file("init", open(init, "rb").read(), 0o755)
        c.file("writer", open(writer, "rb").read(), 0o755)
        listing = []
        for mod in order:
            data = open(os.path.join(moddir, mod), "rb").read()
            base = os.path.basename(mod)
            if base.endswith(".xz"):
                data, base = lzma.decompress(data), base[:-3]
            c.file("lib/modules/" + base, data)
            listing.append(base)
        c.file("modules.list", ("\n".join(listing) + "\n").encode())
        c.trailer()
    print(" ".join(listing))


if __name__ == "__main__":
    main(sys.argv)
