"""How the text of an environment variable becomes a setting's value: one parser per kind.

Each parser says what it accepts (``allowed``, shown in the README and in error messages) and
raises ``ValueError`` with a short reason when the text is not that; the reason never repeats the
value, so a secret's parser cannot leak it. ``settings`` wraps the reason into a ``SettingError``
that names the variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit


class Parser(Protocol):
    allowed: str
    """What the parser accepts, as the README and the error messages say it."""

    def parse(self, text: str) -> Any:
        """The value of ``text``; ``ValueError`` with a short reason (never the value) if bad."""


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    unit: str

    @property
    def allowed(self) -> str:
        return f"an integer from {self.low} to {self.high} ({self.unit})"

    def parse(self, text: str) -> int:
        match = re.fullmatch(r"([+-]?)([0-9]+)", text.strip())  # no exponent, "_" or "٣"
        if not match:
            raise ValueError("not a whole number")
        sign, digits = match.groups()
        if len(digits.lstrip("0")) > len(str(self.high)):  # before int(): no 5000-digit parse
            raise ValueError("below the minimum" if sign == "-" else "too large")
        return self.check(int(sign + digits))

    def check(self, value: int) -> int:
        """``value`` itself when in range (also for run config, which arrives as an int)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("not a whole number")
        if value < self.low:
            raise ValueError("below the minimum")
        if value > self.high:
            raise ValueError("too large")
        return value


@dataclass(frozen=True)
class Moment:
    """An ISO date or datetime, UTC unless it has an offset, inside a sane window."""

    low: datetime
    high: datetime

    @property
    def allowed(self) -> str:
        return f"an ISO date or datetime from {self.low:%Y-%m-%d} to {self.high:%Y-%m-%d}"

    def parse(self, text: str) -> datetime:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError("not an ISO date or datetime") from None
        moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if not self.low <= moment < self.high:
            raise ValueError("outside the allowed window")
        return moment


@dataclass(frozen=True)
class Url:
    schemes: tuple[str, ...]
    example: str
    query: bool = True
    """Whether a query string is allowed (a webhook's token may be one; an S3 prefix has none)."""

    @property
    def allowed(self) -> str:
        starts = " or ".join(f"`{s}://`" for s in self.schemes)
        return f"a URL starting {starts}, e.g. `{self.example}`"

    def parse(self, text: str) -> str:
        value = text.strip()
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("holds spaces or control characters")
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValueError("not a URL") from None
        if parts.scheme not in self.schemes or not parts.netloc:
            raise ValueError("no allowed scheme and host")
        if not self.query and (parts.query or parts.fragment):
            raise ValueError("has a query or fragment")
        return value


@dataclass(frozen=True)
class PathText:
    allowed: str = "a path"

    def parse(self, text: str) -> str:
        if any(not c.isprintable() for c in text) or not text.strip():
            raise ValueError("blank or holds control characters")
        return text


@dataclass(frozen=True)
class DatabaseUrl:
    allowed: str = "the warehouse's SQLAlchemy URL, `postgresql+psycopg2://...` or `sqlite:///...`"

    def parse(self, text: str) -> str:
        import sqlalchemy as sa  # only when a URL is set, and sqlalchemy is loaded by then

        try:
            backend = sa.make_url(text.strip()).get_backend_name()
        except (sa.exc.ArgumentError, ValueError):
            raise ValueError("not a database URL") from None  # the library's text has the URL
        if backend not in ("postgresql", "sqlite"):
            raise ValueError("not a PostgreSQL or SQLite URL")
        return text.strip()


@dataclass(frozen=True)
class Key:
    allowed: str = "16+ bytes (surrounding whitespace is ignored)"

    def parse(self, text: str) -> str:
        from cloudwaste_pipeline.privacy.anonymize import MIN_KEY_BYTES

        if len(text.strip().encode("utf-8")) < MIN_KEY_BYTES:
            raise ValueError("too short")
        return text.strip()


@dataclass(frozen=True)
class Keys:
    allowed: str = "comma-separated earlier keys, oldest first, each 16+ bytes"

    def parse(self, text: str) -> tuple[str, ...]:
        keys = tuple(k.strip() for k in text.split(",") if k.strip())
        for key in keys:
            Key().parse(key)
        return keys


@dataclass(frozen=True)
class Names:
    allowed: str = "comma-separated crash point names"

    def parse(self, text: str) -> tuple[str, ...]:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*", text):
            raise ValueError("not a comma-separated list of names")
        return tuple(text.split(","))


@dataclass(frozen=True)
class Flag:
    allowed: str = "`true` or `false`"

    def parse(self, text: str) -> bool:
        value = text.strip().lower()
        if value not in ("true", "false"):
            raise ValueError("not true or false")
        return value == "true"


@dataclass(frozen=True)
class Text:
    """One line of free text, such as a user id: no control characters, at most 256."""

    allowed: str = "one line of text, at most 256 characters"

    def parse(self, text: str) -> str:
        value = text.strip()
        if not value or len(value) > 256 or any(not c.isprintable() for c in value):
            raise ValueError("blank, too long or holds control characters")
        return value


MAX_QUERY_CHARS = 20_000


@dataclass(frozen=True)
class SqlQuery:
    """One ``SELECT`` (or ``WITH ... SELECT``) statement.

    A second statement is refused, not only for tidiness: after ``SELECT 1; COMMIT;`` a
    PostgreSQL driver runs what follows outside the read-only transaction the query is run in.
    So a ``;`` is refused anywhere but at the end, even inside a string literal.
    """

    allowed: str = "one SELECT statement (no `;` before its end)"

    def parse(self, text: str) -> str:
        query = text.strip().removesuffix(";").rstrip()
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"longer than {MAX_QUERY_CHARS} characters")
        if any(not c.isprintable() and c not in "\n\r\t" for c in query):
            raise ValueError("holds control characters")
        if not re.match(r"(?i)(select|with)\b", query):
            raise ValueError("does not start with SELECT or WITH")
        if ";" in query:
            raise ValueError("more than one statement")
        return query


ORG_PARENT = re.compile(r"r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}")
"""AWS Organizations' own patterns for a root id and an organizational unit id."""


@dataclass(frozen=True)
class OrgParents:
    allowed: str = (
        "comma-separated AWS Organizations OU ids (`ou-...`) and/or the root id (`r-...`)"
    )

    def parse(self, text: str) -> tuple[str, ...]:
        parents = [p.strip() for p in text.split(",")]
        if not all(ORG_PARENT.fullmatch(p) for p in parents):
            raise ValueError("not a comma-separated list of ou-... or r-... ids")
        return tuple(dict.fromkeys(parents))


@dataclass(frozen=True)
class RoleName:
    """An IAM role name, optionally after its path (``team/CloudWasteReadOnly``)."""

    allowed: str = "an IAM role name such as `CloudWasteReadOnly` (optionally `path/name`)"

    def parse(self, text: str) -> str:
        name = text.strip()
        if not re.fullmatch(r"([A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}", name):
            raise ValueError("not an IAM role name")
        return name


@dataclass(frozen=True)
class AwsRegions:
    allowed: str = "comma-separated AWS region names, e.g. `us-east-1,eu-west-1`"

    def parse(self, text: str) -> tuple[str, ...]:
        from cloudwaste_pipeline.accounts import AWS_REGION_PATTERN

        regions = [r.strip() for r in text.split(",")]
        if not all(AWS_REGION_PATTERN.match(r) for r in regions):
            raise ValueError("not a comma-separated list of AWS region names")
        if len(set(regions)) != len(regions):
            raise ValueError("a region is given twice")
        return tuple(regions)
