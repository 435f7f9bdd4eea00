"""Verilog generation from Amaranth components."""
from amaranth.back import verilog

__all__ = ["generate_verilog"]


def generate_verilog(component, name):
    """Verilog text for an Amaranth component, with top module ``name``.
    Ports follow Amaranth's flattening: stream member ``x`` becomes
    ``x__valid``, ``x__ready`` and ``x__payload``."""
    return verilog.convert(component, name=name, emit_src=False)
