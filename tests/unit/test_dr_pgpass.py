"""A restored cluster answers at a new port with the source's passwords: the dry run says when the password
file cannot log in there (its lines for the role all name the original port)."""

from __future__ import annotations

from pathlib import Path

from strongroom.adapters.postgres.forecast import pgpass_problem


def env(tmp_path: Path, *lines: str) -> dict[str, str]:
    passfile = tmp_path / "pgpass"
    passfile.write_text("\n".join(lines) + "\n")
    return {"PGPASSFILE": str(passfile)}


def test_a_line_for_the_original_port_only_is_a_problem(tmp_path: Path) -> None:
    problem = pgpass_problem("replicator", None, env(tmp_path, "127.0.0.1:5432:*:replicator:secret"))
    assert problem and "127.0.0.1:*:*:replicator:PASSWORD" in problem and "secret" not in problem


def test_a_wildcard_port_or_the_chosen_port_or_pgpassword_is_enough(tmp_path: Path) -> None:
    assert pgpass_problem("replicator", None, env(tmp_path, "127.0.0.1:*:*:replicator:s")) is None
    assert pgpass_problem("replicator", 5499, env(tmp_path, "127.0.0.1:5499:*:replicator:s")) is None
    assert pgpass_problem("replicator", None, env(tmp_path, "*:*:*:*:s")) is None
    assert pgpass_problem("replicator", None, {**env(tmp_path, "h:5432:*:replicator:s"), "PGPASSWORD": "x"}) is None


def test_no_file_or_no_line_for_the_role_predicts_nothing(tmp_path: Path) -> None:
    assert pgpass_problem("replicator", None, {"PGPASSFILE": str(tmp_path / "absent")}) is None
    assert pgpass_problem("replicator", None, env(tmp_path, "127.0.0.1:5432:*:other:s")) is None


def test_escaped_colons_are_part_of_a_field(tmp_path: Path) -> None:
    assert pgpass_problem("a:b", None, env(tmp_path, "127.0.0.1:5432:*:a\\:b:s")) is not None
