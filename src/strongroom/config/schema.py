"""The typed shape of an account configuration file (pydantic v2, unknown fields refused everywhere).

Top-level keys: ``variables``, ``vaults``, ``resources``, ``destination``, ``backup_plans``,
``restore_testing_plans`` (its models in config/restore_testing.py), ``frameworks``, ``report_plans``, ``outputs``.
The ``backup_plans`` entries take the NHS blueprint's ``backup_plan_config`` field names so its users can paste
their values. Checks that need other modules (policy documents, vault locks, resource settings) run in
:mod:`strongroom.config.loader` after this shape is valid.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from strongroom.config.restore_testing import RestoreTestingPlan
from strongroom.errors import ConfigError, StrongroomError, UsageError
from strongroom.model import NOTIFICATION_EVENTS, NOTIFICATION_STATES, Arn
from strongroom.plans.schedule import load_timezone, parse_schedule

DEFAULT_COMPLETION_WINDOW = 7 * 24 * 60
MINIMUM_START_WINDOW = 60
MAX_DAYS = 36500

VariableType = Literal["string", "number", "bool", "list", "map"]
ACCOUNT_ID = re.compile(r"^\d{12}$")


def _named(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"'{value}' is not a valid {what}")
        return value

    return AfterValidator(check)


VariableName = Annotated[str, _named(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", "variable name (letters, digits, _ and -)")]
VaultName = Annotated[str, _named(r"^[A-Za-z0-9_-]{2,50}$", "vault name (2-50 letters, digits, _ and -)")]
# The same rule as services.resources.RESOURCE_ID, which this layer may not import.
ResourceId = Annotated[str, _named(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "resource id (letters, digits, ., _, -)")]
PlanName = Annotated[str, _named(r"^[A-Za-z0-9_.-]{1,50}$", "name (1-50 letters, digits, ., _ and -)")]
OutputName = Annotated[str, _named(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", "output name (letters, digits, _ and -)")]
Days = Annotated[int, Field(ge=1, le=MAX_DAYS)]


def _account_id(value: str) -> str:
    if not ACCOUNT_ID.match(value):
        raise ValueError(f"'{value}' is not a 12-digit account id")
    return value


def _vault_arn(value: str) -> str:
    arn = _parse_arn(value)
    if arn is None or arn.kind != "backup-vault":
        raise ValueError(
            f"'{value}' is not a backup vault ARN (arn:strongroom:backup:REGION:ACCOUNT:backup-vault:NAME)"
        )
    return value


def _parse_arn(value: str) -> Arn | None:
    try:
        return Arn.parse(value)
    except UsageError:
        return None


def _schedule(value: str) -> str:
    """AWS cron(...) (or the rate(...) extension), parsed by plans.schedule: the reason names the field."""
    try:
        return parse_schedule(value).expression
    except ConfigError as exc:
        raise ValueError(exc.message) from None


def _timezone(value: str) -> str:
    try:
        load_timezone(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    return value


AccountId = Annotated[str, AfterValidator(_account_id)]
VaultArn = Annotated[str, AfterValidator(_vault_arn)]
Schedule = Annotated[str, AfterValidator(_schedule)]
Timezone = Annotated[str, AfterValidator(_timezone)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariableConfig(Strict):
    type: VariableType = "string"
    default: Any = None  # "no default" is told apart by model_fields_set
    description: str = ""
    sensitive: bool = False

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set


class DefaultDestinationPolicy(Strict):
    """The blueprint's destination vault policy, built by policy.document.default_destination_policy."""

    source_account_ids: list[AccountId] = Field(min_length=1)
    source_vault_arns: list[VaultArn] = []
    admin_principals: list[str] = []


class LockConfig(Strict):
    min_retention_days: Days | None = None
    max_retention_days: Days | None = None
    changeable_for_days: Annotated[int, Field(ge=3, le=MAX_DAYS)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LockConfig:
        low, high = self.min_retention_days, self.max_retention_days
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_retention_days ({low}) is greater than max_retention_days ({high})")
        return self

    def numbers(self) -> tuple[int | None, int | None, int | None]:
        return self.min_retention_days, self.max_retention_days, self.changeable_for_days


# Vault notifications (services/notifications/, docs/notifications.md) ---------------------------------


def _choice(allowed: tuple[str, ...], what: str) -> AfterValidator:
    def check(values: list[str]) -> list[str]:
        unknown = [value for value in values if value not in allowed]
        if unknown:
            raise ValueError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(allowed)}")
        return sorted(set(values))

    return AfterValidator(check)


EventList = Annotated[list[str], _choice(NOTIFICATION_EVENTS, "event")]
StateList = Annotated[list[str], _choice(NOTIFICATION_STATES, "state")]


class NotificationSinkConfig(Strict):
    url: str = Field(min_length=1)  # a secret: give it from a sensitive variable
    events: EventList | None = None  # None: the vault's events
    exclude_states: StateList | None = None  # None: the vault's exclude_states


class NotificationsConfig(Strict):
    """AWS PutBackupVaultNotifications: ``events`` (BackupVaultEvents), sinks instead of an SNS topic."""

    events: Annotated[EventList, Field(min_length=1)]
    exclude_states: StateList = []  # the blueprint's SNS filter {"State": [{"anything-but": ...}]}
    sinks: Annotated[list[NotificationSinkConfig | str], Field(min_length=1)]


def _store_url(value: str) -> str:
    """The store's canonical URL; a URL holding credentials is refused without echoing it (docs/storage.md)."""
    from strongroom.store.base import open_store  # opening an s3:// store sends no request

    try:
        return open_store(value).url
    except StrongroomError as exc:
        raise ValueError(exc.one_line()) from None


StoreUrl = Annotated[str, AfterValidator(_store_url)]


class VaultConfig(Strict):
    # Where the vault's objects live: s3://BUCKET/PREFIX?endpoint=...&region=... or file:///path (an empty
    # store); default HOME/vaults/NAME. Set when the vault is created: a vault never moves.
    store: StoreUrl | None = None
    # Either an AWS-shaped policy document or {"default_destination": {...}}; checked by the loader.
    access_policy: dict[str, Any] | None = None
    lock: LockConfig | None = None
    notifications: NotificationsConfig | None = None


class ResourceConfig(Strict):
    type: str
    settings: dict[str, Any] = {}
    tags: dict[str, str] = {}


class DestinationConfig(Strict):
    vault_arn: VaultArn
    account: str | None = None  # name of the registered remote account holding the vault ('accounts add')


class SelectionTag(Strict):
    key: str
    value: str


class LifecycleConfig(Strict):
    delete_after: Days | None = None
    # Accepted by the schema so the blueprint's shape parses; the loader refuses it (no colder tier yet).
    cold_storage_after: Days | None = None


class CopyActionConfig(Strict):
    """The blueprint's single copy action: to the account's destination vault."""

    delete_after: Days | None = None


class CopyActionToConfig(Strict):
    destination_vault_arn: VaultArn
    delete_after: Days | None = None


class RuleConfig(Strict):
    name: PlanName
    schedule: Schedule
    schedule_expression_timezone: Timezone | None = None  # AWS's ScheduleExpressionTimezone; None: UTC
    target_vault_name: VaultName | None = None  # AWS's name; default: the config's only vault, else Default
    start_window: Annotated[int, Field(ge=MINIMUM_START_WINDOW)] = MINIMUM_START_WINDOW
    completion_window: Annotated[int, Field(ge=60)] = DEFAULT_COMPLETION_WINDOW
    lifecycle: LifecycleConfig = LifecycleConfig()
    copy_action: CopyActionConfig | None = None
    copy_actions: list[CopyActionToConfig] = []
    enable_continuous_backup: bool = False
    recovery_point_tags: dict[str, str] = {}


class BackupPlanConfig(Strict):
    enable: bool = True
    selection_tag: str
    selection_tag_value: str = "True"
    selection_tags: list[SelectionTag] = []
    compliance_resource_types: list[str] = []
    # The blueprint's restore testing fields: used by restore testing selections naming this plan
    # (config/restore_testing.py); a JSON object as a string (its Aurora shape) or a map (its RDS shape).
    restore_testing_overrides: str | dict[str, str | int | bool] | None = None
    validation_window_hours: Annotated[int, Field(ge=1, le=168)] | None = None
    # The blueprint's framework for this plan (its backup_framework.tf), made by the loader: see docs/compliance.md.
    create_framework: bool = False
    rules: list[RuleConfig] = []

    @model_validator(mode="after")
    def _unique_rule_names(self) -> BackupPlanConfig:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self


# Frameworks and report plans (AWS Backup Audit Manager; services/compliance/, services/reports/) -----------
FrameworkName = Annotated[
    str, _named(r"^[A-Za-z][A-Za-z0-9_]{0,255}$", "framework name (a letter, then letters, digits and _)")
]
ReportPlanName = Annotated[
    str, _named(r"^[A-Za-z][A-Za-z0-9_]{0,255}$", "report plan name (a letter, then letters, digits and _)")
]
ParameterValue = str | int | float


class InputParameter(Strict):
    """AWS's ``ControlInputParameter`` (Terraform's ``input_parameter`` block): a name and a value."""

    name: str
    value: ParameterValue


class ControlScopeConfig(Strict):
    compliance_resource_ids: list[str] = []
    compliance_resource_types: list[str] = []
    tags: dict[str, str] = {}


class ControlConfig(Strict):
    name: str
    # Terraform's repeated ``input_parameter`` blocks as a list, or a mapping name -> value.
    input_parameters: list[InputParameter] | dict[str, ParameterValue] = []
    input_parameter: list[InputParameter] = []  # the Terraform block's own name, accepted as well
    scope: ControlScopeConfig = ControlScopeConfig()

    def parameters(self) -> dict[str, str]:
        given = self.input_parameters
        pairs = [(p.name, p.value) for p in given] if isinstance(given, list) else list(given.items())
        pairs += [(p.name, p.value) for p in self.input_parameter]
        return {name: str(value) for name, value in pairs}


class FrameworkConfig(Strict):
    description: str = ""
    controls: Annotated[list[ControlConfig], Field(min_length=1)]


class ReportDeliveryChannelConfig(Strict):
    formats: Annotated[list[Literal["CSV", "JSON"]], Field(min_length=1)] = ["CSV"]
    s3_bucket_name: str | None = None  # the blueprint's; the bucket is reached with the AWS credential chain
    s3_key_prefix: str = ""
    store: StoreUrl | None = None  # Strongroom's: any store URL, e.g. file:///srv/reports or s3://B/P?endpoint=...

    @model_validator(mode="after")
    def _one_place(self) -> ReportDeliveryChannelConfig:
        if (self.s3_bucket_name is None) == (self.store is None):
            raise ValueError("give exactly one of s3_bucket_name (with s3_key_prefix) or store (a store URL)")
        return self


class ReportSettingConfig(Strict):
    report_template: Literal[
        "BACKUP_JOB_REPORT",
        "COPY_JOB_REPORT",
        "RESTORE_JOB_REPORT",
        "CONTROL_COMPLIANCE_REPORT",
        "RESOURCE_COMPLIANCE_REPORT",
    ]
    framework_arns: list[str] = []  # framework names (or ARNs ending in /NAME); empty: every framework
    number_of_frameworks: int | None = None


class ReportPlanConfig(Strict):
    description: str = ""
    report_delivery_channel: ReportDeliveryChannelConfig
    report_setting: ReportSettingConfig
    schedule: Schedule = "cron(0 1 * * ? *)"  # Strongroom's: when the daily report is made (AWS: 1-5 AM UTC)


class OutputConfig(Strict):
    value: Any
    description: str = ""
    sensitive: bool = False


class AccountConfig(Strict):
    variables: dict[VariableName, VariableConfig] = {}
    vaults: dict[VaultName, VaultConfig] = {}
    resources: dict[ResourceId, ResourceConfig] = {}
    destination: DestinationConfig | None = None
    backup_plans: dict[PlanName, BackupPlanConfig] = {}
    restore_testing_plans: dict[PlanName, RestoreTestingPlan] = {}  # config/restore_testing.py
    frameworks: dict[FrameworkName, FrameworkConfig] = {}
    report_plans: dict[ReportPlanName, ReportPlanConfig] = {}
    outputs: dict[OutputName, OutputConfig] = {}


TOP_LEVEL_KEYS = tuple(AccountConfig.model_fields)
