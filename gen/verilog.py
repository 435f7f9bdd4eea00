"""Verilog generation from Amaranth components."""
import hashlib
import re

from amaranth.back import verilog

__all__ = ["generate_verilog", "netlist_sha256"]

# Amaranth names an enum-shaped signal's values in attributes; they are for
# waveform viewers and leave the netlist unchanged.
_ENUM_NAMES = re.compile(r'^\s*\(\* enum_(?:value_[01]+|base_type) = "[^"\n]*" \*\)\n', re.M)


def generate_verilog(component, name):
    """Verilog text for an Amaranth component, with top module ``name``.
    Ports follow Amaranth's flattening: stream member ``x`` becomes
    ``x__valid``, ``x__ready`` and ``x__payload``."""
    return verilog.convert(component, name=name, emit_src=False)


def netlist_sha256(verilog_text):
    """SHA-256 of Verilog text without Amaranth's enum-name attributes, so
    that adding a member to an enum (an error code, an opcode) which a
    design does not decode differently keeps the hash of its netlist: the
    key of place-and-route records and of the build cache."""
    return hashlib.sha256(_ENUM_NAMES.sub("", verilog_text).encode()).hexdigest()
