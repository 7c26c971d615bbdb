"""What a runbook's restore step gets from the resource adapters: requests, endpoints, locations. The DR
handlers hold no resource-type knowledge of their own (they ask the adapter)."""

from __future__ import annotations

import ast
from pathlib import Path

import psycopg
import pytest

from strongroom.adapters import ResourceSpec, RestoreRequest, get_adapter
from strongroom.adapters.base import runbook_types
from strongroom.config.runbook import RestoreStep
from strongroom.errors import ConfigError

DR_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "strongroom" / "services" / "dr"


def restore_step(**fields: object) -> RestoreStep:
    return RestoreStep.model_validate({"name": "restore", "type": "restore", "target_identifier": "x", **fields})


def test_runbooks_restore_the_postgres_types_named_in_the_usual_order() -> None:
    assert runbook_types() == ["postgres-cluster", "postgres"]
    assert not get_adapter("directory").supports_runbooks


def test_a_database_restore_lands_on_the_original_server_under_the_new_name() -> None:
    original = ResourceSpec("app", "postgres", {"dsn": "postgresql://app@db.internal:5433/app"})
    request = get_adapter("postgres").runbook_restore_request(restore_step(no_owners=True, jobs=2), "app_new", original)
    params = psycopg.conninfo.conninfo_to_dict(request.target or "")
    assert (params["host"], params["port"], params["user"], params["dbname"]) == (
        "db.internal",
        "5433",
        "app",
        "app_new",
    )
    assert request.target_identifier == "app_new"
    assert request.options == {"jobs": 2, "no_owners": True}


def test_a_database_restore_step_takes_the_role_and_locale_options_of_restore_start() -> None:
    original = ResourceSpec("app", "postgres", {"dsn": "postgresql://app@db.internal:5433/app"})
    step = restore_step(create_roles=True, role_map={"clinic_owner": "app_owner"}, encoding="UTF8", locale="C")
    request = get_adapter("postgres").runbook_restore_request(step, "app_new", original)
    assert request.options == {
        "create_roles": True,
        "role_map": {"clinic_owner": "app_owner"},
        "encoding": "UTF8",
        "locale": "C",
    }


def test_a_database_restore_without_a_server_says_which_field_to_give() -> None:
    with pytest.raises(ConfigError, match="a postgres restore needs target: the DSN of the server"):
        get_adapter("postgres").runbook_restore_request(restore_step(), "app_new", None)


def test_a_cluster_restore_keeps_port_target_and_trust(tmp_path: Path) -> None:
    adapter = get_adapter("postgres-cluster")
    request = adapter.runbook_restore_request(restore_step(port=5499, trust_restored_config=True), "c2", None)
    assert (request.target, request.target_identifier, request.port) == (None, "c2", 5499)
    assert request.options == {"trust_restored_config": True}
    assert adapter.restore_caveat(request).startswith(", trusting its configuration")
    assert adapter.restore_caveat(RestoreRequest(target_identifier="c2")) == ""
    assert adapter.restore_location(request, tmp_path) == {"data_directory": str(tmp_path / "clusters" / "c2")}


def test_endpoints_of_restored_resources() -> None:
    database = get_adapter("postgres").restored_endpoint({"target": "host=127.0.0.1 port=6543 user=u dbname=d"})
    assert database.as_outputs() == {
        "host": "127.0.0.1",
        "port": 6543,
        "dsn": "host=127.0.0.1 port=6543 user=u dbname=d",
        "dbname": "d",
        "login": "u",
        "database": "d",
    }
    cluster = get_adapter("postgres-cluster").restored_endpoint(
        {
            "dsn": "host=/s port=7001 user=postgres dbname=postgres",
            "port": 7001,
            "data_directory": "/d",
            "stop_command": "pg_ctl stop",
            "log": "/d.log",
        }
    )
    assert cluster.as_outputs() == {
        "host": "127.0.0.1",
        "port": 7001,
        "dsn": "host=/s port=7001 user=postgres dbname=postgres",
        "dbname": "postgres",
        "login": "postgres",
        "data_directory": "/d",
        "stop_command": "pg_ctl stop",
        "log": "/d.log",
        "disabled_on_restore": [],
    }


def test_dr_handlers_import_no_resource_type_module() -> None:
    for path in sorted(DR_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("strongroom.adapters.postgres"), f"{path.name}: {node.module}"
        assert '"postgres-cluster"' not in path.read_text().replace('PREDICTED_TYPE = "postgres-cluster"', ""), (
            path.name
        )
