"""The full-toolchain mode's disk image: python -m build.vm_image [--out PATH] [--check MODEL]

A Debian i386 root filesystem (CheerpX runs 32-bit x86 only) as ext2: bookworm minbase + python3 +
python3-numpy (debootstrap), the rwkvweb wheel, and the VM-side bridge program /usr/local/bin/rwkvweb-vm
(rwkvweb.console: it drives the page's WebGPU bridge over the console). Trimmed of docs, locales, apt's
caches and Python's test suites. Optional (the Pyodide site never needs it) and cached: debootstrap runs
once per package list into .cache/vm/base (needs root and a Debian mirror), the rest is redone on each run.

--check MODEL: chroot into the root filesystem (i386 binaries run natively on x86-64) and run
`python3 -m rwkvweb logits MODEL --backend numpy` there; prints the JSON.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile

from build import wheels
from build.site import BROWSERLESS, CACHE, ROOT, rwkvweb_version

SUITE, ARCH, MIRROR = "bookworm", "i386", "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-numpy")
VM_CACHE = os.path.join(CACHE, "vm")
BASE = os.path.join(VM_CACHE, "base")  # debootstrap's output, untouched: the cache
ROOTFS = os.path.join(VM_CACHE, "rootfs")  # the base, trimmed, with rwkvweb: what the image holds
IMAGE = os.path.join(VM_CACHE, "rwkvweb-i386.ext2")
BASE_STAMP = os.path.join(BASE, ".rwkvweb-base")
PYTHON_SITE = "usr/local/lib/python3.11/dist-packages"  # bookworm's python3 is 3.11
# Paths (globs, inside the root) that a VM running rwkvweb never reads.
TRIM = (
    "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian",
    "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "var/log/*",
    "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib", "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/lib2to3", "usr/lib/python3.11/ensurepip", "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3/dist-packages/numpy/*/tests", "usr/lib/python3/dist-packages/numpy/tests",
    "usr/lib/python3/dist-packages/numpy/f2py", "usr/include/*",
)  # fmt: skip
VM_PROGRAM = """#!/usr/bin/python3
# The VM-side bridge program (rwkvweb.console): the CLI, its webgpu-remote backend over this console.
import sys

from rwkvweb.console import main

sys.exit(main())
"""


class VmImageError(RuntimeError):
    pass


def missing_requirements() -> str:
    """Why the image cannot be built here ('' when it can)."""
    if os.geteuid() != 0:
        return "building the VM image needs root (debootstrap and chroot)"
    for tool in ("debootstrap", "mkfs.ext2", "chroot"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install debootstrap e2fsprogs)"
    return ""


def base(log=print) -> str:
    """The debootstrapped root, made once per SUITE/ARCH/PACKAGES (the stamp names them)."""
    wanted = f"{SUITE} {ARCH} {' '.join(PACKAGES)}\n"
    if os.path.exists(BASE_STAMP) and open(BASE_STAMP).read() == wanted:
        return BASE
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(VM_CACHE, exist_ok=True)
    log(f"debootstrap {SUITE} ({ARCH}, minbase + {', '.join(PACKAGES)}) from {MIRROR} ...")
    started = time.perf_counter()
    command = ["debootstrap", f"--arch={ARCH}", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    result = subprocess.run([*command, SUITE, BASE, MIRROR], capture_output=True, text=True)
    if result.returncode:
        shutil.rmtree(BASE, ignore_errors=True)
        raise VmImageError(f"debootstrap failed (is {MIRROR} reachable?): {result.stderr.strip()[-800:]}")
    with open(BASE_STAMP, "w") as stamp:
        stamp.write(wanted)
    log(f"debootstrap took {time.perf_counter() - started:.0f} s")
    return BASE


def rootfs(log=print) -> str:
    """The base copied, trimmed, with rwkvweb and the VM program installed."""
    source = base(log)
    shutil.rmtree(ROOTFS, ignore_errors=True)
    subprocess.run(["cp", "-a", source, ROOTFS], check=True)
    os.remove(os.path.join(ROOTFS, os.path.basename(BASE_STAMP)))
    for pattern in TRIM:
        for path in glob.glob(os.path.join(ROOTFS, pattern)):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    for cache in glob.glob(os.path.join(ROOTFS, "usr/lib/python3*/**/__pycache__"), recursive=True):
        shutil.rmtree(cache)
    install_wheel(os.path.join(ROOTFS, PYTHON_SITE))
    program = os.path.join(ROOTFS, "usr/local/bin/rwkvweb-vm")
    with open(program, "w") as file:
        file.write(VM_PROGRAM)
    os.chmod(program, 0o755)
    return ROOTFS


def install_wheel(site_packages: str) -> None:
    """rwkvweb's wheel (as the site ships it, less the browser drivers) unpacked: a pure wheel needs no pip."""
    files = wheels.package_files(os.path.join(ROOT, "py", "rwkvweb"), "rwkvweb/", exclude=BROWSERLESS)
    wheel = wheels.pure_wheel_bytes("rwkvweb", rwkvweb_version(), files, "RWKV in the browser")
    os.makedirs(site_packages, exist_ok=True)
    zipfile.ZipFile(io.BytesIO(wheel)).extractall(site_packages)


def image(out: str = IMAGE, log=print) -> dict:
    """The ext2 image of the root filesystem: its used bytes plus a margin for /tmp and the overlay's writes."""
    root = rootfs(log)
    used = int(subprocess.run(["du", "-sb", root], capture_output=True, text=True, check=True).stdout.split()[0])
    size_mib = used * 5 // 4 // (1 << 20) + 32
    if os.path.exists(out):
        os.remove(out)
    subprocess.run(
        ["mkfs.ext2", "-q", "-F", "-b", "4096", "-L", "rwkvweb", "-d", root, out, f"{size_mib}M"], check=True
    )
    return {"image": out, "rootfs_bytes": used, "image_bytes": os.path.getsize(out)}


def chroot_rwkvweb(root: str, *args: str, files: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python3 -m rwkvweb ARGS` inside the root filesystem; files: {path inside: path outside} copied in."""
    for inside, outside in (files or {}).items():
        shutil.copy(outside, os.path.join(root, inside.lstrip("/")))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    return subprocess.run(
        [shutil.which("chroot") or "chroot", root, "python3", "-m", "rwkvweb", *args],
        capture_output=True,
        env=env,
        timeout=600,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build.vm_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=IMAGE)
    parser.add_argument(
        "--check", metavar="MODEL", help="run the CLI's numpy logits on MODEL inside the root filesystem"
    )
    args = parser.parse_args(argv)
    problem = missing_requirements()
    if problem:
        print(f"build.vm_image: {problem}", file=sys.stderr)
        return 2
    try:
        report = image(args.out)
    except VmImageError as error:
        print(f"build.vm_image: {error}", file=sys.stderr)
        return 2
    used = report["rootfs_bytes"] / 2**20
    print(f"{report['image']}: {report['image_bytes'] / 2**20:.0f} MiB image, {used:.0f} MiB used")
    if args.check:
        result = chroot_rwkvweb(
            ROOTFS, "logits", "/tmp/check.st", "--tokens", "1,2,3", files={"/tmp/check.st": args.check}
        )
        sys.stdout.write(result.stdout.decode())
        sys.stderr.write(result.stderr.decode())
        return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
