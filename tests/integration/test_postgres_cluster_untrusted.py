"""A restore never runs what the backup carries: the attacker controls the source cluster (a compromised
source), plants configuration that runs commands and loads code in its data directory, and a real
backup of it is restored with the real CLI, the passphrase in the restoring process's environment.

The server of the restored cluster starts for real: the planted ``ssl_passphrase_command`` (which on a
server start runs shell as the postgres OS user) never runs, the preload library is not loaded, the
included outside file is not read, the job result lists what was disabled, the server's environment
holds no Strongroom secret, and a data directory holding a program is refused. With
``--trust-restored-config`` the same backup's configuration is honoured (which proves the attack is real).
"""

from __future__ import annotations

import datetime
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strongroom.adapters import RestoreRequest
from strongroom.errors import IntegrityError
from strongroom.vault import Vault
from tests.integration.test_postgres_cluster import forged_recovery_point
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error
from tests.support.pgcluster import Janitor, PgCluster, traversable_tempdir
from tests.support.vaults import restore

pytestmark = pytest.mark.postgres

KEY_PASSPHRASE = b"key passphrase"
TARGET_PASSWORD = "target password for tools"


@dataclass
class Attack:
    base: Path
    source: PgCluster
    cli: Cli
    markers: Path  # where the planted commands write (the postgres OS user may)
    outside_conf: Path

    def backup(self) -> str:
        self.cli.run("resources", "add", "forged-source", "--type", "postgres-cluster", "--dsn", self.source.dsn())
        job = self.cli.json("backup", "start", "--resource", "forged-source", "--wait")
        assert job["state"] == "COMPLETED", job
        return str(job["recovery_point_arn"])

    def restore(self, arn: str, name: str, *extra: str, ok: bool = True) -> Any:
        result = self.cli.run(
            "restore",
            "start",
            "--recovery-point",
            arn,
            "--target-identifier",
            name,
            "--wait",
            *extra,
            ok=ok,
            env={"PGPASSWORD": TARGET_PASSWORD},
        )
        return result


@pytest.fixture
def attack(pg_bindir: Path) -> Iterator[Attack]:
    base = traversable_tempdir("strongroom-forged-")
    source = PgCluster.create(base / "source")
    markers = base / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    outside = base / "outside.conf"
    outside.write_text("cluster_name = 'read-from-outside'\n")
    outside.chmod(0o644)
    cli = Cli(base / "home")
    cli.run("init")
    try:
        source.start()
        yield Attack(base, source, cli, markers, outside)
    finally:
        source.destroy()
        shutil.rmtree(base, ignore_errors=True)


def own_by_server(cluster: PgCluster, path: Path, mode: int) -> None:
    path.chmod(mode)
    if cluster.user is not None:
        os.chown(path, cluster.user.uid, cluster.user.gid)


def plant_ssl_key(cluster: PgCluster) -> None:
    """An encrypted key and its certificate in the data directory: starting with ssl = on runs
    ssl_passphrase_command to decrypt it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSPHRASE),
    )
    for file_name, data in (("server.key", pem_key), ("server.crt", cert.public_bytes(serialization.Encoding.PEM))):
        path = cluster.data_dir / file_name
        path.write_bytes(data)
        own_by_server(cluster, path, 0o600)


def plant_configuration(attack: Attack) -> None:
    """What a compromised source writes into its postgresql.auto.conf (read by the server only at its next
    start, so the source keeps running unaffected). Spellings vary as PostgreSQL's parser allows."""
    plant_ssl_key(attack.source)
    markers = attack.markers
    planted = f"""
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
SSL_Passphrase_Command = 'env > {markers}/passphrase-command.env; echo {KEY_PASSPHRASE.decode()}'
ssl_passphrase_command_supports_reload = on
shared_preload_libraries 'auto_explain'
archive_mode = on
archive_command = 'touch {markers}/archive-command'
restore_command='touch {markers}/restore-command'
   include '{attack.outside_conf}'
"""
    with (attack.source.data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(planted)


def restored_cluster(job: dict[str, Any], janitor: Janitor) -> PgCluster:
    result = job["result"]
    return janitor.adopt(result["data_directory"], result["port"])


def show(cluster: PgCluster, setting: str) -> str:
    return str(cluster.query(f"SHOW {setting}")[0][0])


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").partition("=")[::2] for pair in pairs if pair)


def test_planted_commands_and_libraries_do_not_run_when_a_forged_cluster_is_restored(
    attack: Attack, pg_janitor: Janitor
) -> None:
    plant_configuration(attack)
    arn = attack.backup()

    restored = attack.restore(arn, "forged-restored")
    jobs = [j for j in attack.cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE"]
    job = attack.cli.json("jobs", "describe", jobs[-1]["job_id"])
    assert job["state"] == "COMPLETED", job
    cluster = restored_cluster(job, pg_janitor)

    # The server started, and nothing it was told to run ran; nothing it was told to load was loaded.
    assert cluster.query("SELECT 1") == [(1,)]
    assert sorted(path.name for path in attack.markers.iterdir()) == []
    assert show(cluster, "ssl_passphrase_command") == ""
    assert show(cluster, "ssl") == "off"  # its key needs the disabled command
    assert show(cluster, "shared_preload_libraries") == ""
    assert show(cluster, "archive_mode") == "off"
    assert show(cluster, "cluster_name") != "read-from-outside"

    assert "disabled on restore: postgresql.auto.conf:" in restored.stdout
    disabled = {entry.split(": ", 1)[1] for entry in job["result"]["disabled_on_restore"]}
    assert {
        "ssl_passphrase_command",
        "shared_preload_libraries",
        "archive_mode",
        "archive_command",
        "restore_command",
        "include",
    } <= disabled
    assert job["result"]["trusted_restored_config"] is False
    auto_conf = (Path(job["result"]["data_directory"]) / "postgresql.auto.conf").read_text()
    assert f"# strongroom: disabled on restore:    include '{attack.outside_conf}'" in auto_conf
    assert "# strongroom: disabled on restore: SSL_Passphrase_Command = " in auto_conf

    # The restored server was not handed the restoring process's secrets.
    pid = int((Path(job["result"]["data_directory"]) / "postmaster.pid").read_text().splitlines()[0])
    environment = environ_of(pid)
    assert not [name for name in environment if name.startswith("STRONGROOM_")], sorted(environment)
    assert PASSPHRASE not in environment.values() and "PGPASSWORD" not in environment

    # The operator who trusts the source opts in: the same backup's configuration is honoured.
    trusted = attack.restore(arn, "forged-trusted", "--trust-restored-config")
    assert "disabled on restore" not in trusted.stdout
    jobs = [j for j in attack.cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE"]
    honoured = restored_cluster(attack.cli.json("jobs", "describe", jobs[-1]["job_id"]), pg_janitor)
    assert show(honoured, "ssl") == "on" and show(honoured, "shared_preload_libraries") == "auto_explain"
    assert show(honoured, "cluster_name") == "read-from-outside"
    assert (attack.markers / "passphrase-command.env").exists()
    assert show(honoured, "archive_mode") == "off"  # a copy never archives into its source's archive


def test_a_data_directory_holding_a_program_is_refused_unless_trusted(attack: Attack, pg_janitor: Janitor) -> None:
    """A library shipped in the backup could be loaded by settings stored in the catalog itself
    (ALTER ROLE ... SET session_preload_libraries), which no configuration rewrite reaches."""
    planted = attack.source.data_dir / "base" / "evil.so"
    shutil.copyfile("/bin/true", planted)
    own_by_server(attack.source, planted, 0o600)
    arn = attack.backup()

    refused = attack.restore(arn, "with-program", ok=False)
    assert_one_line_error(refused, 7, "holds a program (an ELF file): base/evil.so", "--trust-restored-config")
    assert not (attack.cli.home / "clusters" / "with-program").exists()

    trusted = attack.restore(arn, "with-program-trusted", "--trust-restored-config")
    assert trusted.returncode == 0
    jobs = [j for j in attack.cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE"]
    cluster = restored_cluster(attack.cli.json("jobs", "describe", jobs[-1]["job_id"]), pg_janitor)
    assert cluster.query("SELECT 1") == [(1,)]


def test_a_forged_tablespace_map_is_refused_before_the_server_starts(
    pg_bindir: Path, pg_workdir: Path, vault: Vault, tmp_path: Path
) -> None:
    """Recovery turns each tablespace_map line into a link to any directory and replays WAL into it."""
    outside = pg_workdir / "outside-tablespace"
    files = {
        "PG_VERSION": b"15\n",
        "global/pg_control": b"\0" * 8192,
        "backup_label": b"LABEL: forged\n",
        "tablespace_map": f"16400 {outside}\n".encode(),
    }
    rp_id = forged_recovery_point(vault, [(tarfile.TarInfo(name), data) for name, data in files.items()])
    home = pg_workdir / "home"
    with pytest.raises(IntegrityError) as refused:
        restore(vault, rp_id, RestoreRequest(target_identifier="mapped"), tmp_path / "rtmp", home)
    assert (
        refused.value.message == "the recovery point's base.tar holds a tablespace_map (tablespaces outside the"
        " data directory)"
    )
    assert not (home / "clusters" / "mapped").exists() and not outside.exists()
