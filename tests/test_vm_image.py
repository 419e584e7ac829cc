"""The VM image's root filesystem (python -m build.vm_image), checked without CheerpX: chroot into it (its
i386 binaries run natively on x86-64) and run the CLI with numpy there, and the VM-side bridge program
over a real pty. Skipped where the image cannot be built (no root, no debootstrap, no Debian mirror)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from test_cli import cli

pytestmark = pytest.mark.slow  # the first build debootstraps (minutes); later runs reuse .cache/vm/base


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from build import vm_image

    problem = vm_image.missing_requirements()
    if problem:
        pytest.skip(problem)
    try:
        report = vm_image.image(str(tmp_path_factory.mktemp("vm") / "rwkvweb-i386.ext2"), log=lambda line: None)
    except vm_image.VmImageError as error:
        pytest.skip(str(error))  # e.g. no Debian mirror reachable
    return vm_image, report


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vm-model") / "m.st")
    cli("testmodel", path, "--layers", "2", "--width", "128", "--vocab", "256", "--seed", "6", "--dtype", "fp16")
    return path


def test_the_image_is_ext2_and_holds_python_numpy_and_rwkvweb(built):
    vm_image, report = built
    with open(report["image"], "rb") as image:
        image.seek(1024 + 56)
        assert image.read(2) == b"\x53\xef"  # the ext2 superblock's magic
    root = vm_image.ROOTFS
    assert os.access(os.path.join(root, "usr/local/bin/rwkvweb-vm"), os.X_OK)
    assert os.path.exists(os.path.join(root, vm_image.PYTHON_SITE, "rwkvweb/console.py"))
    assert not os.path.exists(
        os.path.join(root, vm_image.PYTHON_SITE, "rwkvweb/headless.py")
    )  # browser drivers stay out
    assert not os.listdir(os.path.join(root, "usr/share/doc"))  # trimmed
    assert report["rootfs_bytes"] < 400 << 20


def test_chroot_runs_the_cli_with_numpy_and_matches_outside(built, model):
    vm_image, _ = built
    tokens = "1,2,255"
    inside = vm_image.chroot_rwkvweb(
        vm_image.ROOTFS, "logits", "/tmp/m.st", "--tokens", tokens, files={"/tmp/m.st": model}
    )
    assert inside.returncode == 0, inside.stderr.decode()
    outside = json.loads(cli("logits", model, "--tokens", tokens).stdout)["logits"]
    # the float32 reference on i386 numpy vs x86-64 numpy: the same operations, but SIMD paths (and so
    # summation order) differ between builds; 1e-5 of the logits' range is float32 rounding, not a bug
    inside_rows, outside_rows = np.array(json.loads(inside.stdout)["logits"]), np.array(outside)
    assert np.abs(inside_rows - outside_rows).max() <= 1e-5 * (outside_rows.max() - outside_rows.min())
    info = vm_image.chroot_rwkvweb(vm_image.ROOTFS, "info", "/tmp/m.st")
    assert b"n_layer=2, n_embd=128, vocab_size=256" in info.stdout


def test_the_vm_program_in_the_chroot_answers_the_console_over_a_pty(built, model):
    import test_console

    vm_image, _ = built
    assert shutil.which("chroot")
    prefix = ["chroot", vm_image.ROOTFS, "/usr/local/bin/rwkvweb-vm"]
    lines, stderr, _ = test_console.run_in_pty(
        model, "logits", test_console.URL, "--tokens", "1,2", "--backend", "webgpu-remote", command=prefix
    )
    rows = np.array(json.loads(lines[-1])["logits"])
    planned = np.array(json.loads(cli("logits", model, "--tokens", "1,2", "--budget", "2GB").stdout)["logits"])
    assert np.array_equal(rows, planned)  # planned in the VM, run by this side's numpy: bit for bit
