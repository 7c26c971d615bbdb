"""A compromised source cannot plant set-id programs in the destination through a copy.

The attacker holds the source: it backs up a tree of its choosing (a root-owned set-user-ID shell
when it runs as root) and copies it to the destination over the real API. Restoring the copy in the
destination drops the set-id bits unless the operator passes ``--preserve-special``; the source's own
recovery point still restores them exactly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.accounts import account_id, issue_credential, register, serving, source_and_destination, vault_arn


def planted_tree(root: Path) -> Path:
    root.mkdir()
    (root / "rootshell").write_bytes(b"#!/bin/sh\nexec /bin/sh -p\n")
    (root / "rootshell").chmod(0o4755)
    (root / "groupshell").write_bytes(b"#!/bin/sh\nexec /bin/sh -p\n")
    (root / "groupshell").chmod(0o2755)
    (root / "notes.txt").write_bytes(b"ordinary\n")
    (root / "notes.txt").chmod(0o640)
    return root


def permission_bits(root: Path) -> dict[str, int]:
    return {name: stat.S_IMODE(os.lstat(root / name).st_mode) for name in sorted(os.listdir(root))}


def test_set_id_bits_of_a_copy_are_dropped_unless_the_operator_asks(tmp_path: Path) -> None:
    source, destination = source_and_destination(tmp_path)
    source_id = account_id(source)
    tree = planted_tree(tmp_path / "tree")
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    point = source.backup("files")["recovery_point_arn"]
    with serving(destination) as server:
        register(source, "destination", server, issue_credential(destination, "copier", "--account-id", source_id))
        job = source.json(
            "copy", "start", "--recovery-point", point, "--destination-vault", vault_arn(destination), "--wait"
        )
    assert job["state"] == "COMPLETED", job
    copied = job["result"]["destination_recovery_point_arn"]

    by_default = tmp_path / "restored-default"
    said = destination.run("restore", "start", "--recovery-point", copied, "--target", str(by_default), "--wait")
    assert permission_bits(by_default) == {"groupshell": 0o755, "notes.txt": 0o640, "rootshell": 0o755}
    assert "2 files lost set-user-ID/set-group-ID bits" in said.stdout and "--preserve-special" in said.stdout
    described = destination.json(
        "restore", "start", "--recovery-point", copied, "--target", str(tmp_path / "again"), "--wait", "--json"
    )
    assert described["result"]["setid_bits_dropped"] == 2

    asked = tmp_path / "restored-preserving"
    destination.run(
        "restore", "start", "--recovery-point", copied, "--target", str(asked), "--wait", "--preserve-special"
    )
    assert permission_bits(asked) == permission_bits(tree)

    own = tmp_path / "restored-in-source"
    source.run("restore", "start", "--recovery-point", point, "--target", str(own), "--wait")
    assert (
        permission_bits(own) == permission_bits(tree) == {"groupshell": 0o2755, "notes.txt": 0o640, "rootshell": 0o4755}
    )
