"""Model instances from the row of one hand-written statement.

For the few reads on a hot path (every API request's token, every reply's
conversation) the ORM's query compilation costs more CPU than PostgreSQL
takes to answer (docs/benchmarks.md, REST replies). `Columns` writes a
model's column list once and turns a slice of a row back into an instance
as the ORM would: every field's database converters applied, `from_db`, so
the instance saves, refreshes and compares like any other.
"""

from django.db import connections


class Columns:
    """Every concrete column of `model`, selected under the table alias `alias`."""

    def __init__(self, model, alias: str):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = [field.attname for field in self.fields]
        self.width = len(self.fields)
        self.sql = ", ".join(f'{alias}."{field.column}"' for field in self.fields)
        self._alias = alias
        self._converters: dict[str, list] = {}

    def converters(self, using: str) -> list:
        """(index, field's column, converters) for each column that has any."""
        if using not in self._converters:
            connection = connections[using]
            found = []
            for index, field in enumerate(self.fields):
                column = field.get_col(self._alias)
                functions = connection.ops.get_db_converters(
                    column
                ) + column.get_db_converters(connection)
                if functions:
                    found.append((index, column, functions))
            self._converters[using] = found
        return self._converters[using]

    def build(self, values, using: str = "default"):
        """The instance of `values` (this model's slice of a row)."""
        values = list(values)
        connection = connections[using]
        for index, column, functions in self.converters(using):
            value = values[index]
            for function in functions:
                value = function(value, column, connection)
            values[index] = value
        return self.model.from_db(using, self.names, values)
