"""The seed's step 4 in its two modes: ``update_secret`` (self-managed credentials: point the app's
secret at the restored database) and ``rotate_credentials`` (managed credentials, likely gone with the
old cluster: a new password set on the restored cluster and stored as the app's secret)."""

from __future__ import annotations

import secrets as random
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from strongroom.config.runbook import RotateCredentialsStep, UpdateSecretStep
from strongroom.errors import ConfigError, NotFoundError, TargetError
from strongroom.services import secrets
from strongroom.services.dr.context import StepContext, first_line

SecretStep = TypeVar("SecretStep", UpdateSecretStep, RotateCredentialsStep)
SECRET_HINT = (
    "put it first ('strongroom secrets put NAME --rds', value on stdin), or use a rotate_credentials step"
    " (managed credentials) that writes a new one"
)


class UpdateSecret:
    def run(self, ctx: StepContext[UpdateSecretStep]) -> dict[str, Any]:
        restored = ctx.required("restore")
        name, target = ctx.step.secret, ctx.scratch_name(ctx.step.secret)
        current = _existing(ctx, name, required=True)
        values = ctx.step.values or _location(restored)
        updated = {**(current or {}), **values}
        if _existing(ctx, target, required=False) != updated:  # a resumed step does not add a version
            secrets.put_secret(ctx.account, target, updated)
        version = secrets.describe_secret(ctx.account, target)["version"]
        ctx.changes.append(
            f"secret {target} version {version}: {', '.join(sorted(values))} now point at {restored['identifier']}"
        )
        return {"secret": target, "version": version, "fields": sorted(values)}

    def describe(self, ctx: StepContext[UpdateSecretStep]) -> tuple[str, dict[str, Any], list[str]]:
        restored = ctx.previous("restore") or {}
        name = ctx.step.secret
        values = ctx.step.values or _location(restored)
        fields = sorted(values)
        problems = [] if ctx.secret_known(name) else [f"secret '{name}' does not exist"]
        where = "" if not ctx.rehearsal else f" (the rehearsal writes a copy, {ctx.scratch_name(name)})"
        text = f"set {', '.join(fields)} of secret {name} to the restored {restored.get('identifier', 'target')}{where}"
        held = {**ctx.expected_secret(name), **{k: v for k, v in values.items() if k in ("username", "dbname")}}
        return text, {"secret": ctx.scratch_name(name), **held}, problems

    def clean_up(self, ctx: StepContext[UpdateSecretStep], outputs: dict[str, Any]) -> list[str]:
        return _delete_scratch(ctx, outputs)


class RotateCredentials:
    def run(self, ctx: StepContext[RotateCredentialsStep]) -> dict[str, Any]:
        restored = ctx.required("restore")
        target = ctx.scratch_name(ctx.step.secret)
        existing = _existing(ctx, ctx.step.secret, required=False) or {}
        username = ctx.step.username or existing.get("username")
        if not username:
            raise ConfigError(
                f"rotate_credentials needs a username: give username, or keep it in secret '{ctx.step.secret}'"
            )
        password = random.token_urlsafe(ctx.step.password_length)[: ctx.step.password_length]
        _set_password(restored, username, password)
        dbname = _database(ctx, restored, existing)
        value = {
            "engine": "postgres",
            "host": restored["host"],
            "port": int(restored["port"]),
            "username": username,
            "password": password,
            "dbname": dbname,
        }
        version = secrets.put_secret(ctx.account, target, value)["version"]
        ctx.changes.append(
            f"new password for role {username} on {restored['identifier']}; secret {target} version {version} holds it"
        )
        return {"secret": target, "version": version, "username": username}

    def describe(self, ctx: StepContext[RotateCredentialsStep]) -> tuple[str, dict[str, Any], list[str]]:
        restored = ctx.previous("restore") or {}
        name = ctx.step.secret
        held = ctx.expected_secret(name)
        user = ctx.step.username or held.get("username")
        problems = [] if user else [f"no username: give username (secret '{name}' does not exist to read it from)"]
        dbname = _database(ctx, restored, held)
        problems += ctx.target_problems(user, dbname)
        target = restored.get("identifier", "the restored target")
        text = (
            f"set a new random password for role {user or '?'} on {target}"
            f" and store the credentials (database {dbname}) as secret {ctx.scratch_name(name)}"
        )
        return text, {"secret": ctx.scratch_name(name), "username": user, "dbname": dbname}, problems

    def clean_up(self, ctx: StepContext[RotateCredentialsStep], outputs: dict[str, Any]) -> list[str]:
        return _delete_scratch(ctx, outputs)


def _database(ctx: StepContext[RotateCredentialsStep], restored: dict[str, Any], held: dict[str, Any]) -> str:
    """The app's database: a logical restore's new database (any other name on that server is not the restored
    data); for a cluster, ``dbname``, else the secret's, else postgres."""
    return str(restored.get("database") or ctx.step.dbname or held.get("dbname") or "postgres")


def _existing(ctx: StepContext[SecretStep], name: str, *, required: bool) -> dict[str, Any] | None:
    try:
        value = secrets.get_secret(ctx.account, name)
    except NotFoundError:
        if required:
            raise NotFoundError(f"secret '{name}' does not exist in this account", hint=SECRET_HINT) from None
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"secret '{name}' holds a string, not the JSON object of database credentials",
            hint="put it again in the RDS shape with 'strongroom secrets put NAME --rds'",
        )
    return value


def _location(restored: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"host": restored.get("host"), "port": restored.get("port")}
    if restored.get("database"):
        values["dbname"] = restored["database"]
    return values


def _set_password(restored: dict[str, Any], username: str, password: str) -> None:
    """ALTER ROLE with a SCRAM verifier computed here: the password itself never reaches the server's logs."""
    where = f"{restored['identifier']} ({restored['host']}:{restored['port']})"
    try:
        with psycopg.connect(restored["dsn"], connect_timeout=10, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone() is None:
                raise TargetError(
                    f"role {username} does not exist on {where}", hint="give the username the app logs in with"
                )
            verifier = conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256")
            statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(username), sql.Literal(verifier.decode())
            )
            conn.execute(statement)
    except psycopg.Error as exc:
        raise TargetError(f"setting the password of {username} on {where} failed: {first_line(exc)}") from None


def _delete_scratch(ctx: StepContext[SecretStep], outputs: dict[str, Any]) -> list[str]:
    name = outputs.get("secret")
    if not ctx.rehearsal or not name or name == ctx.step.secret:
        return []
    if ctx.account.catalog.delete_secret(name):
        return [f"deleted secret {name}"]
    return []
