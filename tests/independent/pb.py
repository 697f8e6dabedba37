"""Hand-written protobuf wire format (stdlib only).

Both independent scripts need protobuf, and the point of them is to not share
code with the Rust implementation, so this is a small, deliberately dumb codec
working at the wire level: a message is a list of (field number, wire type,
value) triples. Schema knowledge (field numbers from docs/protocol.md §9) lives in the
callers, next to the code that uses it.

Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. Groups (3/4)
are obsolete and never appear in our schemas; decoding them is an error.
"""

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class DecodeError(ValueError):
    pass


# ---------------------------------------------------------------- encoding

def varint(n):
    """Unsigned varint. Negative int32/enum values are sign-extended to
    64 bits, as protobuf does for plain `int32` fields."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(n):
    """sint32/sint64 encoding: 0,-1,1,-2 -> 0,1,2,3."""
    return (n << 1) ^ (n >> 63) if n < 0 else n << 1


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def f_varint(field, n):
    return key(field, VARINT) + varint(n)


def f_sint(field, n):
    return key(field, VARINT) + varint(zigzag(n))


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return key(field, LEN) + varint(len(data)) + data


def f_fixed64(field, n):
    return key(field, FIXED64) + (n & (2**64 - 1)).to_bytes(8, "little")


def f_fixed32(field, n):
    return key(field, FIXED32) + (n & (2**32 - 1)).to_bytes(4, "little")


# ---------------------------------------------------------------- decoding

def read_varint(buf, pos):
    """Returns (value, new position). At most 10 bytes, as in protobuf."""
    result = shift = 0
    for i in range(10):
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def unzigzag(n):
    return (n >> 1) ^ -(n & 1)


def as_int32(n):
    """A varint decoded as int32/enum (two's complement, truncated)."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def decode(buf):
    """Whole message -> list of (field, wire type, value). LEN values are
    bytes, numeric ones ints. Raises DecodeError on malformed input."""
    buf = bytes(buf)
    out, pos = [], 0
    while pos < len(buf):
        k, pos = read_varint(buf, pos)
        field, wt = k >> 3, k & 7
        if field == 0:
            raise DecodeError("field number 0")
        if wt == VARINT:
            val, pos = read_varint(buf, pos)
        elif wt == FIXED64:
            if pos + 8 > len(buf):
                raise DecodeError("truncated fixed64")
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == FIXED32:
            if pos + 4 > len(buf):
                raise DecodeError("truncated fixed32")
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wt == LEN:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise DecodeError("truncated length-delimited field %d" % field)
            val, pos = buf[pos:pos + n], pos + n
        else:
            raise DecodeError("unsupported wire type %d (field %d)" % (wt, field))
        out.append((field, wt, val))
    return out


class Msg:
    """Read-only view of a decoded message with typed getters. Getters check
    the wire type, so a field sent with the wrong type is reported instead of
    being silently misread. Unknown fields are simply never asked for."""

    def __init__(self, buf):
        self.fields = decode(buf)

    def _all(self, field, wt):
        vals = []
        for f, w, v in self.fields:
            if f != field:
                continue
            if w != wt:
                raise DecodeError("field %d has wire type %d, expected %d" % (field, w, wt))
            vals.append(v)
        return vals

    def has(self, field):
        return any(f == field for f, _, _ in self.fields)

    # proto: for a non-repeated field the last occurrence wins.
    def bytes(self, field, default=None):
        vals = self._all(field, LEN)
        return vals[-1] if vals else default

    def string(self, field, default=None):
        raw = self.bytes(field)
        return default if raw is None else raw.decode("utf-8")

    def int32(self, field, default=None):
        vals = self._all(field, VARINT)
        return as_int32(vals[-1]) if vals else default

    def sint32(self, field, default=None):
        vals = self._all(field, VARINT)
        return as_int32(unzigzag(vals[-1])) if vals else default

    def repeated_bytes(self, field):
        return self._all(field, LEN)

    def repeated_strings(self, field):
        return [v.decode("utf-8") for v in self._all(field, LEN)]

    def repeated_msgs(self, field):
        return [Msg(v) for v in self._all(field, LEN)]

    def msg(self, field):
        """Embedded message; repeated occurrences of a singular message field
        are merged, as protobuf does, by concatenating their bytes."""
        vals = self._all(field, LEN)
        return Msg(b"".join(vals)) if vals else None
