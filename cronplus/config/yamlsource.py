"""YAML text to plain values, each remembering its file:line:col.

PyYAML's event stream is read into dicts, lists and scalars as YAML 1.1 types them, with the
place of every key and value kept beside them, so a location such as
``("jobs", "backup", "retries")`` maps back to ``line:col``. Problems YAML itself finds
(syntax, a byte that is not UTF-8, a character YAML forbids, a duplicate key, an unquoted
``*/5 * * * *`` or ``2:30``) become ``ConfigIssue`` values, all of them at once; what the
values mean is ``loader.py``'s business.

``loader.py`` uses ``decode``, ``read_yaml`` and a ``Values``' ``root``,
``issues``, ``issue``, ``place`` and ``explained``; the rest is the reader's own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import yaml

from cronplus.core.model import ConfigError, ConfigIssue
from cronplus.core.words import describe_value as describe


class Mark(Protocol):
    """Where a key or value starts in the text: 0-based, as PyYAML and libyaml count."""

    @property
    def line(self) -> int: ...

    @property
    def column(self) -> int: ...


# --- YAML to values ---------------------------------------------------------------------------

Place = tuple[Mark | None, Mark | None, str | None]
"""A key's mark, its value's mark, and the source text of a plain scalar that YAML 1.1 did
not read as a string (``2:30``, ``yes``), for the "quote it" hints."""

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER: Any = yaml.resolver.Resolver()
_RESOLVED_FIRST = frozenset(k for k in yaml.resolver.Resolver.yaml_implicit_resolvers if k)
_STR = "tag:yaml.org,2002:str"
_MERGE, _SKIP = object(), object()  # a plain "<<" key, a key to drop
_UNQUOTED = {
    "*": "YAML reads a leading '*' as an alias",
    "@": "YAML reserves a leading '@'",
    "`": "YAML reserves a leading '`'",
}


class _Frame:
    """A mapping or list being built; ``key`` is None while a mapping waits for one."""

    __slots__ = ("anchor", "as_key", "key", "key_mark", "mark", "merges", "path", "places", "value")

    def __init__(self, value: Any, path: tuple[Any, ...], event: Any, as_key: bool) -> None:
        self.value, self.path, self.anchor, self.mark = value, path, event.anchor, event.start_mark
        self.as_key, self.key_mark = as_key, None
        self.key: Any = None
        self.places: dict[Any, Place] = {}
        self.merges: list[tuple[Any, Any]] = []


class Values:
    """Plain values built from YAML events, with the place of every key and value.

    Built from events, not from a composed node tree: composing costs twice as much (0.9 s
    against 0.4 s for 10,000 jobs with libyaml), and the events carry every mark.
    """

    def __init__(self, file: str, quoted: dict[tuple[int, int], str]) -> None:
        self.file, self.quoted = file, quoted
        self.issues: list[ConfigIssue] = []
        self.places: dict[int, tuple[Any, dict[Any, Place]]] = {}
        self.root: Any = None
        self.root_mark: Any = None
        self.documents = 0
        self.base60: set[tuple[int, int]] = set()  # places of 2:30-style numbers, reported
        self._anchors: dict[str, tuple[Any, str | None]] = {}
        self._stack: list[_Frame] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def issue(self, mark: Any, path: Sequence[Any], message: str) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        self.issues.append(ConfigIssue(self.file, line, column, where.lstrip("."), message))

    def build(self, text: str) -> None:
        handlers = {
            yaml.ScalarEvent: self._scalar,
            yaml.AliasEvent: self._alias,
            yaml.MappingStartEvent: self._start,
            yaml.SequenceStartEvent: self._start,
            yaml.MappingEndEvent: self._end,
            yaml.SequenceEndEvent: self._end,
        }
        loader = _LOADER(text)
        try:
            while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
                if (handler := handlers.get(type(event))) is not None:
                    handler(event)
                elif isinstance(event, yaml.DocumentStartEvent):
                    self.documents += 1
                    if self.documents > 1:
                        self.issue(event.start_mark, (), "expected one YAML document, found two")
                        break
        finally:
            loader.dispose()

    def _waiting(self) -> _Frame | None:
        """The mapping whose next scalar is a key, if that is what comes next."""
        top = self._stack[-1] if self._stack else None
        return top if top is not None and top.key is None and type(top.value) is dict else None

    def _here(self) -> tuple[Any, ...]:
        if not self._stack:
            return ()
        top = self._stack[-1]
        return (*top.path, len(top.value) if isinstance(top.value, list) else top.key)

    def _scalar(self, event: Any) -> None:
        if (top := self._waiting()) is not None:
            merge = event.value == "<<" and event.implicit[0]
            self._key(top, _MERGE if merge else event.value, event.start_mark)
            return
        if (spot := (event.start_mark.line, event.start_mark.column)) in self.quoted:
            here = self._here()
            # A whole document that is one unquoted '@...' scalar has no key to name.
            what = here[-1] if here else "the value"
            self.issue(event.start_mark, here, f"{what} {self.quoted.pop(spot)}")
        value, text = self._construct(event)
        if event.anchor:
            self._anchors[event.anchor] = (value, text)
        self._put(value, event.start_mark, text)

    def _construct(self, event: Any) -> tuple[Any, str | None]:
        """YAML 1.1 as PyYAML reads it: plain ``2:30`` is 150, ``yes`` is true."""
        value, plain, tag = event.value, event.implicit[0], event.tag
        if tag is None or tag == "!":
            if not plain or (value and value[0] not in _RESOLVED_FIRST):
                return value, None
            tag = _RESOLVER.resolve(yaml.ScalarNode, value, event.implicit)
        make = self._constructor.yaml_constructors.get(tag)
        if tag == _STR or (make is None and plain):
            return value, None
        try:
            if make is None:
                raise ValueError(f"unsupported YAML tag {tag!r}")
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
            result = make(self._constructor, node)
        except (TypeError, ValueError, yaml.YAMLError) as error:
            why = error.args[0] if make is None else f"cannot read {value!r} as {tag}"
            self.issue(event.start_mark, self._here(), why)
            return value, None
        if plain and ":" in value and isinstance(result, int | float):
            self._sexagesimal(event.start_mark, value, result)
        return result, value if plain and value else None  # an empty value needs no quotes

    def _sexagesimal(self, mark: Any, text: str, value: float) -> None:
        """YAML 1.1 reads ``2:30`` as 150; no crontab field wants that, so it is an error."""
        here = self._here()
        what = here[-1] if here and isinstance(here[-1], str) else "this value"
        kind = "integer" if isinstance(value, int) else "number"
        why = f"must be quoted: YAML 1.1 reads unquoted {text} as the base-60 {kind} {value}"
        self.issue(mark, here, f"{what} {why}")
        self.base60.add((mark.line, mark.column))

    def _key(self, top: _Frame, key: Any, mark: Any) -> None:
        if key is not _MERGE and not isinstance(key, str):
            self.issue(mark, top.path, f"expected a name as key, got {describe(key)}")
            key = _SKIP
        elif isinstance(key, str) and (first := top.places.get(key)) is not None:
            what = "job name" if top.path == ("jobs",) else "key"
            assert first[0] is not None  # an entry of a mapping always has its key's mark
            at = f"line {first[0].line + 1}, column {first[0].column + 1}"
            self.issue(mark, (*top.path, key), f"duplicate {what} {key!r}: first given at {at}")
        top.key, top.key_mark = key, mark

    def _put(self, value: Any, mark: Any, text: str | None) -> None:
        if not self._stack:
            self.root, self.root_mark = value, mark
            return
        top = self._stack[-1]
        if isinstance(top.value, list):
            top.places[len(top.value)] = (None, mark, text)
            top.value.append(value)
            return
        if top.key is _MERGE:
            top.merges.append((value, mark))
        elif top.key is not _SKIP:
            top.value[top.key] = value
            top.places[top.key] = (top.key_mark, mark, text)
        top.key = None

    def _start(self, event: Any) -> None:
        value: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
        frame = _Frame(value, self._here(), event, as_key=self._waiting() is not None)
        self.places[id(value)] = (value, frame.places)  # keeps ids unique while loading
        self._stack.append(frame)

    def _end(self, _event: Any) -> None:
        frame = self._stack.pop()
        for source, mark in frame.merges:
            self._merge(frame, source, mark)
        if frame.anchor:
            self._anchors[frame.anchor] = (frame.value, None)
        if frame.as_key:
            self._key(self._stack[-1], frame.value, frame.mark)
        else:
            self._put(frame.value, frame.mark, None)

    def _merge(self, frame: _Frame, source: Any, mark: Any) -> None:
        """``<<: *base`` or ``<<: [*a, *b]``: the keys the mapping lacks, first source first."""
        for item in source if isinstance(source, list) else [source]:
            if not isinstance(item, dict):
                self.issue(mark, frame.path, "a merge key '<<' takes a mapping or a list of them")
                continue
            places = self.places[id(item)][1]
            for key, value in item.items():
                if key not in frame.value:
                    frame.value[key], frame.places[key] = value, places[key]

    def _alias(self, event: Any) -> None:
        value, text = self._anchors.get(event.anchor, (f"*{event.anchor}", None))
        if event.anchor not in self._anchors:
            inside = any(frame.anchor == event.anchor for frame in self._stack)
            why = "is used inside its own anchor" if inside else "names no anchor; quote the value"
            self.issue(event.start_mark, self._here(), f"alias '*{event.anchor}' {why}")
        if (top := self._waiting()) is not None:
            self._key(top, value, event.start_mark)
        else:
            self._put(value, event.start_mark, text)

    # --- places, for whoever checks the values --------------------------------------------

    def place(self, loc: Sequence[Any]) -> Place:
        """The place of the value at ``loc``, or of the deepest part of ``loc`` that exists."""
        container: Any = self.root
        place: Place = (None, self.root_mark, None)
        for step in loc:
            table = self.places.get(id(container), (None, {}))[1]
            if step not in table:
                break
            container, place = container[step], table[step]
        return place

    def explained(self, mark: Mark | None) -> bool:
        """Whether the value at ``mark`` was already reported, with its reason, while
        reading (an unquoted ``2:30``), so a check of its type need not report it again."""
        return mark is not None and (mark.line, mark.column) in self.base60


# --- YAML syntax --------------------------------------------------------------------------------


def read_yaml(text: str, file: str) -> Values:
    """Build the values. A value YAML cannot even scan because it is unquoted (``*/5 * * * *``,
    ``@daily``) is quoted and reported, and the text read again, so later errors show too."""
    quoted: dict[tuple[int, int], str] = {}
    while True:
        values = Values(file, dict(quoted))
        try:
            values.build(text)
        except yaml.MarkedYAMLError as error:
            fixed = _quote(text, error)
            if fixed is not None and fixed[1] not in quoted:
                text, spot, why = fixed
                quoted[spot] = why
                continue
            values.issues, values.quoted, values.root = [_syntax(file, text, error)], quoted, None
        except yaml.YAMLError as error:  # a ReaderError: a character YAML does not allow
            values.issues, values.root = [_unprintable(file, error, text)], None
        if not values.issues and values.documents == 0:
            what = "is empty" if not text.strip() else "holds only comments"
            values.issue(None, (), f"the file {what}; expected a mapping with a 'jobs' key")
        for (line, column), why in values.quoted.items():  # the file broke before them
            values.issues.append(ConfigIssue(file, line + 1, column + 1, "", f"value {why}"))
        return values


def _quote(text: str, error: yaml.MarkedYAMLError) -> tuple[str, tuple[int, int], str] | None:
    """The text with the block value at the error quoted, if an unquoted '*', '@' or '`' at
    the start of a ``key: value`` or ``- value`` was the error."""
    mark = error.context_mark if error.context == "while scanning an alias" else error.problem_mark
    if mark is None:
        return None
    lines = text.splitlines()  # the line breaks YAML knows, as far as its reader lets through
    line, column = _line(lines, mark.line), mark.column
    before = line[:column]
    if line[column : column + 1] not in _UNQUOTED or not re.search(r"(^|[:-])\s+$", before):
        return None
    value = re.split(r"\s#", line[column:], maxsplit=1)[0].rstrip()
    lines[mark.line] = before + "'" + value.replace("'", "''") + "'" + line[column + len(value) :]
    return "\n".join(lines), (mark.line, column), f"must be quoted: {_UNQUOTED[line[column]]}"


def _line(lines: list[str], index: int) -> str:
    return lines[index] if index < len(lines) else ""  # an error at the end of the text


def _syntax(file: str, text: str, error: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"not valid YAML: {error.problem or error.context}"
    if error.context and error.problem and error.context_mark:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    if mark and _line(text.splitlines(), mark.line)[mark.column : mark.column + 1] == "\t":
        message += "; YAML allows no tabs in indentation"
    return ConfigIssue(file, line, column, "", message)


def _unprintable(file: str, error: yaml.YAMLError, text: str) -> ConfigIssue:
    reader: Any = error  # libyaml counts the offset in UTF-8 bytes, PyYAML in characters
    data = text.encode() if _LOADER is not yaml.SafeLoader else text
    line, column = _line_column(data, reader.position)
    code = reader.character if isinstance(reader.character, int) else ord(reader.character)
    return ConfigIssue(file, line, column, "", f"character U+{code:04X} is not allowed in YAML")


def _line_column(data: bytes | str, offset: int) -> tuple[int, int]:
    """The 1-based line and column (in characters) of ``offset`` into ``data``."""
    head = data[:offset]
    before = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def decode(data: bytes, file: str) -> str:
    """UTF-8 text (a byte order mark dropped), or a ``ConfigError`` at the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, column = _line_column(data, error.start)
        why = f"byte 0x{data[error.start]:02x} is not UTF-8; save the file as UTF-8"
        raise ConfigError([ConfigIssue(file, line, column, "", why)]) from None
