"""The search compiler: one function from a parsed SearchQuery to SQL over the index tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement as _Col
from sqlalchemy.sql.functions import FunctionElement

from app.errors import Invalid
from app.fhir.search import Criterion, SearchQuery, SortKey, Value, split_token, unescape
from app.fhir.values import normalize, now_utc, number_range, parse_search_date
from app.storage.indexer import clip, split_local_reference
from app.storage.tables import INDEX_TABLES, RESOURCE

REFERENCE = INDEX_TABLES["reference"]
_TABLES = INDEX_TABLES
_R = RESOURCE.alias("r")  # the searched rows (an alias is immutable: built once, reused)
# Index rows read by _sort subqueries: only ever correlated to `_R` at the top level.
_SORT = {name: table.alias() for name, table in _TABLES.items()}


class _Likely(FunctionElement[bool]):
    """`likely(condition)` on SQLite, the bare condition elsewhere: tells SQLite's planner
    (which has no statistics unless someone runs ANALYZE) that the condition selects most
    rows, so an index lookup elsewhere in the query drives it instead of this condition."""

    name = "likely"  # untyped: SQLite would otherwise render `likely(...) = 1`
    inherit_cache = True


@compiles(_Likely, "sqlite")
def _likely_sqlite(element: _Likely, compiler: Any, **kw: Any) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"


@compiles(_Likely)
def _likely_other(element: _Likely, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Shifted:
    """`column + delta` compared with Python values, moving `delta` to the Python side: SQLite
    keeps datetimes as text, where `column + interval` in SQL is numeric nonsense."""

    def __init__(self, column: Any, delta: timedelta) -> None:
        self.column, self.delta = column, delta

    def __gt__(self, other: Any) -> ColumnElement[bool]:
        return self.column > other - self.delta

    def __lt__(self, other: Any) -> ColumnElement[bool]:
        return self.column < other - self.delta

    def __le__(self, other: Any) -> ColumnElement[bool]:
        return self.column <= other - self.delta


class Compiler:
    """Compiles criteria against a resource alias; `base_url` recognises our absolute refs."""

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = (base_url or "").rstrip("/")

    # -- entry points ---------------------------------------------------------------------------

    def where(self, query: SearchQuery, r: FromClause) -> list[ColumnElement[bool]]:
        """WHERE clauses selecting live resources of the query's type that match."""
        of_type: ColumnElement[bool] = r.c.resource_type == query.type
        if any(self._indexed(c) for c in query.criteria):
            # An index lookup (below) finds the matches: SQLite must not scan the whole type.
            of_type = _Likely(of_type)
        clauses: list[ColumnElement[bool]] = [of_type, r.c.deleted == false()]
        if query.snapshot is not None:
            clauses.append(r.c.pk <= query.snapshot)
        clauses.extend(self.criterion(c, r, query.type) for c in query.criteria)
        return clauses

    def order_by(self, query: SearchQuery, r: FromClause) -> list[Any]:
        """ORDER BY for _sort (NULLs last), always ending with creation order for stability."""
        out: list[Any] = []
        for key in query.sort:
            expr = self._sort_expr(key, r)
            out.append(expr.desc().nulls_last() if key.descending else expr.asc().nulls_last())
        out.append(r.c.pk)
        return out

    def select_page(self, query: SearchQuery, *, peek: bool = False) -> Select[Any]:
        """The page of matching resource rows (`peek`: and the first row of the next page, to
        tell whether there is one)."""
        r = _R
        return (
            select(r)
            .where(*self.where(query, r))
            .order_by(*self.order_by(query, r))
            .limit(query.count + 1 if peek else query.count)
            .offset(query.offset)
        )

    def select_count(self, query: SearchQuery) -> Select[Any]:
        """The number of matches."""
        r = _R
        return select(func.count()).select_from(r).where(*self.where(query, r))

    # -- criteria -----------------------------------------------------------------------------

    @staticmethod
    def _indexed(c: Criterion) -> bool:
        """True when `criterion` compiles `c` to a lookup in an index table (given a type)."""
        return not (
            c.has is not None
            or c.param.code in ("_id", "_lastUpdated")
            or c.modifier == "missing"
            or c.chain is not None
            or (c.param.type == "token" and c.modifier == "not")
        )

    def criterion(
        self, c: Criterion, r: FromClause, type_name: str | None = None
    ) -> ColumnElement[bool]:
        """One parameter occurrence (its values OR-ed); `type_name` is the type of `r`'s rows."""
        if c.has is not None:
            return self._has(c, r)
        if c.param.code in ("_id", "_lastUpdated") and c.modifier == "missing":
            # Every resource has an id and a lastUpdated.
            return false() if c.values[0].raw == "true" else r.c.pk.is_not(None)
        if c.param.code == "_id":
            return self._id(c, r)
        if c.param.code == "_lastUpdated":
            return or_(*(self._date_point(v, r.c.last_updated, c) for v in c.values))
        idx = _TABLES[c.param.type].alias()
        if c.modifier == "missing":
            present = exists().where(idx.c.resource_pk == r.c.pk, idx.c.param == c.param.code)
            return not_(present) if c.values[0].raw == "true" else present
        if c.chain is not None:
            return self._chain(c, r)
        if c.param.type == "token" and c.modifier == "not":
            match = or_(*(self._token(v, idx, c) for v in c.values))
            return not_(
                exists().where(idx.c.resource_pk == r.c.pk, idx.c.param == c.param.code, match)
            )
        param_code = c.param.code + (":of-type" if c.modifier == "of-type" else "")
        matcher = getattr(self, "_" + c.param.type)
        if type_name is not None:  # here exactly when self._indexed(c)
            # Uncorrelated, so the database can start from the index and fetch only the matching
            # resources (SQLite never turns a correlated EXISTS into a join: it would read every
            # resource of the type). Index rows carry their resource's type. Nothing around it
            # can correlate the table, so it needs no alias (whose columns cost time to build).
            table = _TABLES[c.param.type]
            match = or_(*(matcher(v, table, c) for v in c.values))
            return r.c.pk.in_(
                select(table.c.resource_pk).where(
                    table.c.resource_type == type_name, table.c.param == param_code, match
                )
            )
        match = or_(*(matcher(v, idx, c) for v in c.values))
        return exists().where(idx.c.resource_pk == r.c.pk, idx.c.param == param_code, match)

    def _id(self, c: Criterion, r: FromClause) -> ColumnElement[bool]:
        if c.modifier not in (None, "not"):
            raise Invalid(f"Modifier ':{c.modifier}' is not supported on _id")
        ids = [unescape(v.raw) for v in c.values]
        cond = r.c.resource_id.in_(ids)
        return not_(cond) if c.modifier == "not" else cond

    def _token(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        if c.modifier == "text":
            return idx.c.text.like(_like_escape(normalize(v.raw)) + "%", escape="\\")
        if c.modifier == "of-type":
            parts = v.raw.split("|")
            if len(parts) != 3:
                raise Invalid(f"':of-type' takes system|code|value, not '{v.raw}'")
            return and_(idx.c.system == f"{parts[0]}|{parts[1]}", idx.c.code == parts[2])
        system, code = split_token(v.raw)
        code = clip("code", code)
        system = clip("system", system) if system else system
        if system is None:
            return idx.c.code == code
        if system == "":
            return and_(idx.c.code == code, or_(idx.c.system.is_(None), idx.c.system == ""))
        if code == "":
            return idx.c.system == system
        return and_(idx.c.system == system, idx.c.code == code)

    def _string(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        text = unescape(v.raw)
        if c.modifier == "exact":
            return idx.c.exact == clip("exact", text)
        normalized = clip("value", normalize(text))
        if not normalized:
            raise Invalid(
                f"'{text}' has nothing to search on for '{c.param.code}' (letters or digits "
                "are needed; use :exact to match punctuation)"
            )
        pattern = _like_escape(normalized)
        if c.modifier == "contains":
            return idx.c.value.like(f"%{pattern}%", escape="\\")
        return idx.c.value.like(f"{pattern}%", escape="\\")

    def _uri(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        text = unescape(v.raw)
        # URIs are case-sensitive: the LIKE (which SQLite folds) only narrows, substr decides.
        if c.modifier == "below":
            prefix = func.substr(idx.c.value, 1, len(text)) == text
            return and_(idx.c.value.like(_like_escape(text) + "%", escape="\\"), prefix)
        if c.modifier == "above":
            return func.substr(literal(text), 1, func.length(idx.c.value)) == idx.c.value
        return idx.c.value == text

    def _number(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        try:
            low, high = number_range(v.raw)
        except ValueError:
            raise Invalid(
                f"Invalid number '{v.raw}' for search parameter '{c.param.code}'"
            ) from None
        return self._compare(v.prefix, low, high, idx.c.low, idx.c.high, inclusive_high=True)

    def _date(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        low, high = parse_search_date(v.raw, c.param.code)
        return self._compare(v.prefix, low, high, idx.c.low, idx.c.high)

    def _date_point(self, v: Value, column: Any, c: Criterion) -> ColumnElement[bool]:
        low, high = parse_search_date(v.raw, c.param.code)
        # lastUpdated is an instant kept to the millisecond: its own range is 1 ms wide.
        return self._compare(
            v.prefix, low, high, column, _Shifted(column, timedelta(milliseconds=1))
        )

    @staticmethod
    def _compare(
        prefix: str,
        s_low: Any,
        s_high: Any,
        r_low: Any,
        r_high: Any,
        *,
        inclusive_high: bool = False,
    ) -> ColumnElement[bool]:
        """FHIR R4 prefix semantics between the search range and the resource's range."""
        # Stored numbers are points, so "within" the search interval excludes its upper end.
        upper = (r_high < s_high) if inclusive_high else (r_high <= s_high)
        # `r_low < s_high` follows from `upper` (a stored range never ends before it starts) but
        # bounds the index scan on `low` from both sides, and PostgreSQL then estimates a birth
        # date at tens of rows, not a quarter of the table (PDQm at 1M Patients: 2.5 s -> 40 ms).
        within = and_(r_low >= s_low, r_low < s_high, upper)
        if prefix == "eq":
            return within
        if prefix == "ne":
            return not_(within)
        if prefix == "gt":
            return r_high > s_high
        if prefix == "lt":
            return r_low < s_low
        if prefix == "ge":
            return or_(r_high > s_high, within)
        if prefix == "le":
            return or_(r_low < s_low, within)
        if prefix == "sa":
            return r_low >= s_high
        if prefix == "eb":
            return r_high <= s_low
        # ap: overlap with the search range widened by 10% of its distance from now
        if isinstance(s_low, datetime):
            gap = abs(now_utc() - s_low) * 0.1
            gap = max(gap, timedelta(days=1))
        else:
            gap = max(abs(s_low) * 0.1, (s_high - s_low))
        return and_(r_low < s_high + gap, r_high > s_low - gap)

    def _reference(self, v: Value, idx: FromClause, c: Criterion) -> ColumnElement[bool]:
        if c.modifier == "identifier":
            system, value = split_token(v.raw)
            cond = idx.c.identifier_value == value
            return and_(cond, idx.c.identifier_system == system) if system else cond
        raw = unescape(v.raw)
        if self.base_url and raw.startswith(self.base_url + "/"):
            raw = raw[len(self.base_url) + 1 :]
        target_type, target_id = split_local_reference(raw)
        if target_type:
            if c.target_type and c.target_type != target_type:
                return false()
            return and_(idx.c.target_type == target_type, idx.c.target_id == target_id)
        if "/" in raw or ":" in raw:
            return idx.c.url == raw
        cond = idx.c.target_id == raw
        if c.target_type:
            return and_(cond, idx.c.target_type == c.target_type)
        if c.param.targets:
            return and_(cond, idx.c.target_type.in_(c.param.targets))
        return cond

    def _chain(self, c: Criterion, r: FromClause) -> ColumnElement[bool]:
        assert c.chain is not None and (c.target_type is not None or c.chain_types)
        ref = REFERENCE.alias()
        target = RESOURCE.alias()
        types = [c.target_type] if c.target_type else list(c.chain_types)
        return exists().where(
            ref.c.resource_pk == r.c.pk,
            ref.c.param == c.param.code,
            ref.c.target_type.in_(types),
            target.c.resource_type == ref.c.target_type,
            target.c.resource_id == ref.c.target_id,
            target.c.deleted == false(),
            self.criterion(c.chain, target),
        )

    def _has(self, c: Criterion, r: FromClause) -> ColumnElement[bool]:
        assert c.has is not None
        ref = REFERENCE.alias()
        source = RESOURCE.alias()
        return exists().where(
            source.c.resource_type == c.has.source_type,
            source.c.deleted == false(),
            ref.c.resource_pk == source.c.pk,
            ref.c.param == c.has.reference.code,
            ref.c.target_type == r.c.resource_type,
            ref.c.target_id == r.c.resource_id,
            self.criterion(c.has.inner, source),
        )

    # -- sorting ------------------------------------------------------------------------------

    def _sort_expr(self, key: SortKey, r: FromClause) -> _Col[Any]:
        code = key.param.code
        if code == "_id":
            return r.c.resource_id
        if code == "_lastUpdated":
            return r.c.last_updated
        idx = _SORT[key.param.type]
        column = {
            "token": idx.c.code if "code" in idx.c else None,
            "string": idx.c.value if "value" in idx.c else None,
            "uri": idx.c.value if "value" in idx.c else None,
            "date": idx.c.low if "low" in idx.c else None,
            "number": idx.c.low if "low" in idx.c else None,
            "reference": idx.c.target_id if "target_id" in idx.c else None,
        }[key.param.type]
        agg = func.max(column) if key.descending else func.min(column)
        return select(agg).where(idx.c.resource_pk == r.c.pk, idx.c.param == code).scalar_subquery()
