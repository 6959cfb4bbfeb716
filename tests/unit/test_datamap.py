"""Data map: every stored column carries a data category, and every personal column a known retention rule."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

from marketplace.db.models import Base
from marketplace.privacy.datamap import PERSONAL, RETENTION_RULES, DataCategory, data


def problems(metadata: MetaData) -> list[str]:
    """Columns that lack a data category, or are personal without a known retention rule.

    Keys are exempt, except keys that point at an account: they say whose row it is, which is personal data.
    """
    found = []
    for table in metadata.tables.values():
        for column in table.columns:
            points_at_account = any(fk.target_fullname == "accounts.id" for fk in column.foreign_keys)
            if (column.primary_key or column.foreign_keys) and not points_at_account:
                continue
            name = f"{table.name}.{column.name}"
            category = column.info.get("data_category")
            if not isinstance(category, DataCategory):
                found.append(f"{name}: no data category")
            elif category in PERSONAL and column.info.get("retention") not in RETENTION_RULES:
                found.append(f"{name}: personal ({category}) without a known retention rule")
    return found


def test_every_column_is_tagged() -> None:
    assert Base.metadata.tables, "no tables registered"
    assert problems(Base.metadata) == []


def test_an_untagged_or_unretained_column_is_caught() -> None:
    md = MetaData()
    Table("parents", md, Column("id", Integer, primary_key=True))
    Table("accounts", md, Column("id", Integer, primary_key=True),
          Column("email", String, info={"data_category": DataCategory.CONTACT, "retention": "account_lifetime"}))
    Table("things", md, Column("id", Integer, primary_key=True),
          Column("parent_id", ForeignKey("parents.id")),
          Column("owner_id", ForeignKey("accounts.id")),
          Column("note", String),
          Column("email", String, info={"data_category": DataCategory.CONTACT}),
          Column("flag", String, info={"data_category": DataCategory.OPERATIONAL}))
    assert problems(md) == ["things.owner_id: no data category",
                            "things.note: no data category",
                            "things.email: personal (contact) without a known retention rule"]


@pytest.mark.parametrize("retention", [None, "forever"])
def test_data_refuses_a_personal_column_without_a_known_retention_rule(retention: str | None) -> None:
    with pytest.raises(ValueError):
        data(DataCategory.CONTACT, retention, String(254))


def test_data_records_category_and_retention() -> None:
    column = data(DataCategory.FINANCIAL, "financial_records", String(10)).column
    assert column.info == {"data_category": DataCategory.FINANCIAL, "retention": "financial_records"}
    operational = data(DataCategory.OPERATIONAL, None, String(10)).column
    assert operational.info == {"data_category": DataCategory.OPERATIONAL}
