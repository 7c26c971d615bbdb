"""The configuration reference names every field the schema accepts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from strongroom.config import schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_field_of_the_configuration_file_is_documented() -> None:
    section = DOCS.read_text().split("## The account configuration file", 1)[1]
    models = [
        value
        for value in vars(schema).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == schema.__name__
    ]
    fields = {name for model in models for name in model.model_fields}
    assert len(fields) > 30
    assert not sorted(name for name in fields if f"`{name}`" not in section)
