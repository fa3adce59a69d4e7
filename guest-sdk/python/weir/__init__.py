"""weir guest SDK for Python: write weir plugins as componentize-py components.

A plugin is a Python module (``app.py``) built with::

    componentize-py -d wit -w enricher componentize -p guest-sdk/python -p my-plugin app -o my-plugin.wasm

(``-w projection`` or ``-w command-handler`` for the other kinds; see
docs/languages.md). The module subclasses one of :class:`Enricher`,
:class:`Projection` or :class:`CommandHandler` and exports it under the name
componentize-py looks for::

    River = weir.river(MyEnricher)        # world enricher
    Pond = weir.pond(MyProjection)        # world projection
    Service = weir.service(MyHandler)     # world command-handler

The SDK hides the columnar batch encoding of the WIT contract
(``weir:plugin@0.1.0``): plugin code sees one :class:`Event` at a time and
emits through an :class:`Emitter`. :func:`loads` / :func:`dumps` read and
write JSON the way the Rust SDK (serde_json) does, so plugins in both
languages produce byte-identical output for the same input.
"""

import json as _json
import re as _re

from componentize_py_types import Err
from wit_world.imports import host as _wit_host
from wit_world.imports import types as _types

# Which imports exist depends on the world the component is built for. They
# must be imported here, at build time: componentize-py snapshots the
# initialised interpreter, and no module can be loaded when the plugin runs.
try:
    from wit_world.imports import lookup as _wit_lookup
except ImportError:  # not an enricher
    _wit_lookup = None
try:
    from wit_world.imports import state as _wit_state
except ImportError:  # not a projection
    _wit_state = None

__all__ = [
    "Enricher",
    "Projection",
    "CommandHandler",
    "Event",
    "Emitter",
    "State",
    "Command",
    "NewEvent",
    "Rejection",
    "river",
    "pond",
    "service",
    "loads",
    "dumps",
    "parse_config",
    "lookup",
    "lookup_json",
    "log",
]


# --------------------------------------------------------------------------
# JSON with serde_json's conventions
# --------------------------------------------------------------------------

_SORTED_OBJECT = lambda pairs: dict(sorted(dict(pairs).items()))  # noqa: E731
_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _big_int_as_float(text):
    # serde_json keeps integers that fit in i64/u64 exact and reads larger
    # ones as f64.
    value = int(text)
    if value == 0 and text.startswith("-"):
        return -0.0  # serde_json reads "-0" as the float -0.0
    if _I64_MIN <= value <= _U64_MAX:
        return value
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"number out of range: {text[:20]}...") from None


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text}")
    return value


_DECODER = _json.JSONDecoder(parse_constant=_reject_constant, parse_int=_big_int_as_float, parse_float=_finite_float)
_VALUE_DECODER = _json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_int=_big_int_as_float,
    parse_float=_finite_float,
    object_pairs_hook=_SORTED_OBJECT,
)
# A \uD800-\uDFFF escape: JSON text may pair them into one character; a
# lone one is not a Unicode scalar value, and serde_json refuses it.
_SURROGATE_ESCAPE = _re.compile(r"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = _re.compile("[\ud800-\udfff]")


def _check_scalar_values(value):
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            raise ValueError("lone surrogate in string")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_scalar_values(k)
            _check_scalar_values(v)
    elif isinstance(value, list):
        for v in value:
            _check_scalar_values(v)


def loads(data, sort_keys=False):
    """Parse JSON from ``bytes`` / ``str`` (UTF-8, strict: no NaN, no trailing data).

    With ``sort_keys=True`` objects come back with their keys in order, like a
    ``serde_json::Value`` in Rust (so re-serialising gives the same bytes).
    Raises ``ValueError`` on anything that is not valid JSON.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    value = (_VALUE_DECODER if sort_keys else _DECODER).decode(data)
    if _SURROGATE_ESCAPE.search(data):
        _check_scalar_values(value)
    return value


_ESCAPE = _json.encoder.encode_basestring  # escapes exactly what serde_json escapes
_FLOAT_PARTS = _re.compile(r"^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$")


def _format_float(value):
    """A finite float the way serde_json writes it (shortest round-trip
    digits; plain notation for exponents -5..=15, else ``1.5e+20`` /
    ``1e-7``), so Python and Rust plugins emit the same bytes."""
    if value != value or value in (float("inf"), float("-inf")):
        return "null"
    sign, whole, frac, exp = _FLOAT_PARTS.match(repr(value)).groups()
    frac = frac or ""
    mantissa = (whole + frac).lstrip("0")
    if not mantissa:
        return sign + "0.0"
    # value = 0.<digits> * 10**point, digits without leading zeros
    if whole != "0":
        point = len(whole) + int(exp or 0)
    else:
        point = int(exp or 0) - (len(frac) - len(frac.lstrip("0")))
    digits = mantissa.rstrip("0")
    n, e = len(digits), point - 1
    if -5 <= e <= 15:
        if n <= point:
            return sign + digits + "0" * (point - n) + ".0"
        if point > 0:
            return sign + digits[:point] + "." + digits[point:]
        return sign + "0." + "0" * (-point) + digits
    body = digits if n == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{body}e{'+' if e >= 0 else '-'}{abs(e)}"


def _write(value, out):
    if isinstance(value, str):
        out.append(_ESCAPE(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_format_float(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_ESCAPE(k if isinstance(k, str) else str(k)))
            out.append(":")
            _write(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _write(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def dumps(value):
    """Serialise ``value`` as compact JSON ``bytes``, keys in the dict's own
    order, numbers and strings written exactly as serde_json writes them."""
    out = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def parse_config(config):
    """The plugin's JSON config as a dict; empty or ``null`` gives ``{}``."""
    text = config.strip()
    if not text or text == "null":
        return {}
    try:
        parsed = loads(text)
    except ValueError as e:
        raise ValueError(f"invalid config: {e}") from None
    if not isinstance(parsed, dict):
        raise ValueError("invalid config: expected a JSON object")
    return parsed


# --------------------------------------------------------------------------
# Host imports
# --------------------------------------------------------------------------


class _Log:
    """Structured logging through the host: ``weir.log.info("...")``."""

    @staticmethod
    def _send(level, message):
        _wit_host.log(getattr(_wit_host.Level, level), str(message))

    def trace(self, message):
        self._send("TRACE", message)

    def debug(self, message):
        self._send("DEBUG", message)

    def info(self, message):
        self._send("INFO", message)

    def warn(self, message):
        self._send("WARN", message)

    def error(self, message):
        self._send("ERROR", message)


log = _Log()


def _as_bytes(key):
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def lookup(pond, key):
    """The committed value under ``key`` in the pond named ``pond`` (enrichers
    only: a stream-table join); ``None`` when the key or pond does not exist."""
    if _wit_lookup is None:
        raise RuntimeError("lookup is only available to enrichers")
    return _wit_lookup.lookup(pond, _as_bytes(key))


def lookup_json(pond, key):
    """:func:`lookup` parsed as JSON (object keys sorted, like a Rust
    ``serde_json::Value``); a value that does not parse reads as ``None``."""
    raw = lookup(pond, key)
    if raw is None:
        return None
    try:
        return loads(raw, sort_keys=True)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Batches: per-event views over the columnar encoding
# --------------------------------------------------------------------------


def _span(ends, i):
    start = ends[i - 1] if i > 0 else 0
    end = ends[i] if i < len(ends) else 0
    return start, max(start, end)


class Event:
    """One event of a batch. Key, value and headers are sliced from the
    batch's columns on first use."""

    __slots__ = ("_batch", "index")

    def __init__(self, batch, index):
        self._batch = batch
        self.index = index

    @property
    def offset(self):
        return self._batch.offsets[self.index]

    @property
    def timestamp(self):
        """Milliseconds since the Unix epoch."""
        return self._batch.timestamps[self.index]

    @property
    def topic(self):
        return self._batch.topic

    @property
    def partition(self):
        return self._batch.partition

    @property
    def key(self):
        """The key as ``bytes``; empty when the event has no key."""
        start, end = _span(self._batch.key_ends, self.index)
        return self._batch.keys[start:end]

    @property
    def value(self):
        start, end = _span(self._batch.value_ends, self.index)
        return self._batch.values[start:end]

    def json(self):
        """The value parsed as JSON; raises ``ValueError`` if it is not JSON."""
        return loads(self.value)

    @property
    def headers(self):
        """``[(name, value_bytes), ...]``; names that are not UTF-8 are skipped."""
        h = self._batch.headers
        start, end = _span(h.ends, self.index)
        result = []
        for j in range(start, end):
            ns, ne = _span(h.name_ends, j)
            vs, ve = _span(h.value_ends, j)
            try:
                result.append((h.names[ns:ne].decode("utf-8"), h.values[vs:ve]))
            except UnicodeDecodeError:
                continue
        return result

    def header(self, name):
        """The value of the first header called ``name``, or ``None``."""
        for n, v in self.headers:
            if n == name:
                return v
        return None


class Emitter:
    """Collects what an enricher emits for a batch, in the columnar form."""

    def __init__(self):
        self._source = 0
        self._outputs = []
        self._sources = []
        self._keys = bytearray()
        self._key_ends = []
        self._values = bytearray()
        self._value_ends = []
        self._h_ends = []
        self._h_names = bytearray()
        self._h_name_ends = []
        self._h_values = bytearray()
        self._h_value_ends = []

    def emit(self, output, key, value, headers=()):
        """Emit ``value`` (bytes or str) with ``key`` (empty = no key) to output
        number ``output`` (an index into the manifest's outputs)."""
        self._values += _as_bytes(value)
        self._value_ends.append(len(self._values))
        self._keys += _as_bytes(key)
        self._key_ends.append(len(self._keys))
        self._outputs.append(output)
        self._sources.append(self._source)
        for name, hvalue in headers:
            self._h_names += _as_bytes(name)
            self._h_name_ends.append(len(self._h_names))
            self._h_values += _as_bytes(hvalue)
            self._h_value_ends.append(len(self._h_values))
        self._h_ends.append(len(self._h_name_ends))

    def emit_json(self, output, key, value, headers=()):
        """Emit ``value`` serialised with :func:`dumps`."""
        self.emit(output, key, dumps(value), headers)

    def forward(self, output, event):
        """Emit ``event`` unchanged (key, value, headers) to ``output``."""
        self.emit(output, event.key, event.value, event.headers)

    def __len__(self):
        return len(self._outputs)

    def _into_emitted(self):
        return _types.Emitted(
            outputs=self._outputs,
            sources=self._sources,
            key_ends=self._key_ends,
            keys=bytes(self._keys),
            value_ends=self._value_ends,
            values=bytes(self._values),
            headers=_types.HeaderColumns(
                ends=self._h_ends,
                name_ends=self._h_name_ends,
                names=bytes(self._h_names),
                value_ends=self._h_value_ends,
                values=bytes(self._h_values),
            ),
        )


class State:
    """A projection's handle on its pond's key-value state. Keys and values
    are bytes (``str`` keys are UTF-8 encoded). Writes commit with the batch."""

    def __init__(self):
        if _wit_state is None:
            raise RuntimeError("state is only available to projections")
        self._state = _wit_state

    def get(self, key):
        return self._state.get(_as_bytes(key))

    def get_json(self, key):
        """The value under ``key`` parsed as JSON, or ``None``; raises
        ``ValueError`` if it is not valid JSON."""
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return loads(raw)
        except ValueError as e:
            shown = _as_bytes(key).decode("utf-8", "replace")
            raise ValueError(f"state value under {shown!r} is not valid JSON: {e}") from None

    def put(self, key, value):
        self._state.put(_as_bytes(key), _as_bytes(value))

    def put_json(self, key, value):
        self.put(key, dumps(value))

    def delete(self, key):
        self._state.delete(_as_bytes(key))

    def scan(self, prefix=b"", start_after=None, limit=256):
        """Up to ``limit`` ``(key, value)`` pairs under ``prefix``, in key order,
        strictly after ``start_after`` when given."""
        after = None if start_after is None else _as_bytes(start_after)
        return self._state.scan(_as_bytes(prefix), after, limit)

    def scan_all(self, prefix=b""):
        """Every entry under ``prefix``, fetched page by page."""
        page_size = 256
        entries = []
        while True:
            after = entries[-1][0] if entries else None
            page = self.scan(prefix, after, page_size)
            entries.extend(page)
            if len(page) < page_size:
                return entries


# --------------------------------------------------------------------------
# Plugin base classes
# --------------------------------------------------------------------------


class Enricher:
    """Subclass, set ``name`` / ``version``, implement ``process``.

    ``__init__(self, config)`` receives the config as a dict (see
    :func:`parse_config`); raise ``ValueError`` to refuse it."""

    name = "python-enricher"
    version = "0.1.0"

    def __init__(self, config):
        self.config = config

    def process(self, event, out):
        """Handle one event, emitting zero or more records through ``out``.
        Raising fails the batch, naming this event."""
        raise NotImplementedError


class Projection:
    """Subclass, set ``name`` / ``version``, implement ``apply`` (and
    optionally ``query``)."""

    name = "python-projection"
    version = "0.1.0"

    def __init__(self, config):
        self.config = config

    def apply(self, event, state):
        """Fold one event into ``state``. Raising fails the batch (nothing of
        it is committed), naming this event."""
        raise NotImplementedError

    def query(self, request, state):
        """Answer a custom read (``request`` is bytes); return bytes or str."""
        raise ValueError("this projection has no custom queries")


class Command:
    """A command for an aggregate: ``name``, ``data`` (parsed JSON, ``None``
    when empty), ``id`` and ``aggregate``."""

    __slots__ = ("id", "aggregate", "name", "data")

    def __init__(self, id, aggregate, name, data):
        self.id = id
        self.aggregate = aggregate
        self.name = name
        self.data = data


class NewEvent:
    """An event to append: ``name`` and JSON-serialisable ``data``."""

    __slots__ = ("name", "data")

    def __init__(self, name, data=None):
        self.name = name
        self.data = data


class Rejection(Exception):
    """Raise from ``decide`` to refuse a command with a stable ``code``."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class CommandHandler:
    """The decider pattern. Subclass and implement ``initial_state``,
    ``decide`` and ``evolve``. State is JSON: it is stored as
    ``dumps(state)`` and read back with ``loads``."""

    name = "python-command-handler"
    version = "0.1.0"

    def __init__(self, config):
        self.config = config

    def initial_state(self):
        """The state of an aggregate that has no events yet."""
        return {}

    def decide(self, command, state):
        """Return the list of :class:`NewEvent` the command causes, or raise
        :class:`Rejection`."""
        raise NotImplementedError

    def evolve(self, state, event):
        """Return the state after ``event`` (a :class:`NewEvent` with parsed
        ``data``). Must be deterministic."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# Exports: adapters from the WIT interfaces to the classes above
# --------------------------------------------------------------------------

_instance = None


def _plugin():
    if _instance is None:
        raise RuntimeError("plugin not initialised: init was not called")
    return _instance


def _init(cls, config):
    global _instance
    try:
        _instance = cls(parse_config(config))
    except Exception as e:  # the host gets the reason, the instance stays unusable
        raise Err(str(e) or type(e).__name__)


def _info(cls, kind):
    return _types.PluginInfo(name=cls.name, version=cls.version, kind=kind)


def _failure(message, index):
    return Err(_types.Failure(message=message, event_index=index))


def river(cls):
    """The export class for world ``enricher``: ``River = weir.river(MyEnricher)``."""

    class River:
        def init(self, config):
            _init(cls, config)

        def describe(self):
            return _info(cls, _types.PluginKind.ENRICHER)

        def process(self, batch):
            try:
                plugin = _plugin()
            except RuntimeError as e:
                raise _failure(str(e), None)
            out = Emitter()
            for i in range(len(batch.offsets)):
                out._source = i
                try:
                    plugin.process(Event(batch, i), out)
                except Exception as e:
                    raise _failure(str(e) or type(e).__name__, i)
            return out._into_emitted()

    return River


def pond(cls):
    """The export class for world ``projection``: ``Pond = weir.pond(MyProjection)``."""

    class Pond:
        def init(self, config):
            _init(cls, config)

        def describe(self):
            return _info(cls, _types.PluginKind.PROJECTION)

        def apply(self, batch):
            try:
                plugin = _plugin()
            except RuntimeError as e:
                raise _failure(str(e), None)
            state = State()
            for i in range(len(batch.offsets)):
                try:
                    plugin.apply(Event(batch, i), state)
                except Exception as e:
                    raise _failure(str(e) or type(e).__name__, i)

        def query(self, request):
            try:
                return _as_bytes(_plugin().query(request, State()))
            except Exception as e:
                raise Err(str(e) or type(e).__name__)

    return Pond


def _event_data(name, data):
    if not data.strip():
        return None
    try:
        return loads(data)
    except ValueError as e:
        raise ValueError(f"`{name}`: {e}") from None


def service(cls):
    """The export class for world ``command-handler``: ``Service = weir.service(MyHandler)``."""

    def reject(code, message):
        return Err(_types.Rejection(code=code, message=message))

    def load_state(plugin, raw):
        return plugin.initial_state() if not raw else loads(raw)

    class Service:
        def init(self, config):
            _init(cls, config)

        def describe(self):
            return _info(cls, _types.PluginKind.COMMAND_HANDLER)

        def decide(self, command, state):
            try:
                plugin = _plugin()
            except RuntimeError as e:
                raise reject("not-initialised", str(e))
            try:
                data = _event_data(command.name, command.data)
            except ValueError as e:
                raise reject("invalid-command", str(e))
            try:
                current = load_state(plugin, state)
            except ValueError as e:
                raise reject("invalid-state", f"aggregate state is not valid: {e}")
            try:
                events = plugin.decide(Command(command.id, command.aggregate, command.name, data), current)
            except Rejection as r:
                raise reject(r.code, r.message)
            except Exception as e:  # a bug in decide: refuse the command, keep the instance
                raise reject("error", str(e) or type(e).__name__)
            try:
                return [_types.Event(name=e.name, data=dumps(e.data)) for e in events]
            except TypeError as e:
                raise reject("invalid-event", str(e))

        def evolve(self, state, events):
            # No error channel: an unreadable state or event is a bug in the
            # plugin's own history, so raising traps and the host reports it.
            plugin = _plugin()
            current = load_state(plugin, state)
            for event in events:
                current = plugin.evolve(current, NewEvent(event.name, _event_data(event.name, event.data)))
            return dumps(current)

    return Service
