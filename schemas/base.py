"""The shape every table module fills in: a name, an Arrow schema and its keys.

Kept free of lakecurate imports so that executor code may use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the lake: its name, Arrow schema and identifying key."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    doc: str = ""

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def spark_schema(self):  # -> pyspark.sql.types.StructType
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self.schema)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


def field(name: str, dtype: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, dtype, nullable=nullable)
