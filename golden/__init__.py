"""trilut's bit-exact integer reference ("golden model"): the contract that
the hardware matches integer for integer.

Everything a user or script needs is importable from here::

    from trilut.golden import tlmm_matmul, quantize_ternary, requantize
"""
from .llm import (KVCache, LlamaConfig, LlamaParams, decode_step, float_forward, int_rmsnorm,
                  kv_head_of, prefill, rope_tables)
from .dynquant import requantize_rows, row_bias, row_quantize, row_requant_params
from .quant import (INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN, M_BITS_DEFAULT, dequantize,
                    quantize_int8, quantize_ternary, requant_params, requantize, residual_add)
from .tlmm import (ENCODINGS, GROUPS, acc_bits_for, code_bits, decode_codes, entry_digits,
                   max_k_for, table_entries, ternary_codes, tlmm_lookup, tlmm_matmul,
                   tlmm_tables)

__all__ = [
    "INT8_MIN", "INT8_MAX", "INT16_MIN", "INT16_MAX", "M_BITS_DEFAULT",
    "quantize_ternary", "quantize_int8", "requant_params", "requantize", "residual_add",
    "dequantize",
    "GROUPS", "ENCODINGS", "table_entries", "code_bits", "entry_digits", "ternary_codes",
    "decode_codes", "tlmm_tables", "tlmm_lookup", "tlmm_matmul", "acc_bits_for", "max_k_for",
    "row_quantize", "requantize_rows", "row_requant_params", "row_bias",
    "LlamaConfig", "LlamaParams", "KVCache", "prefill", "decode_step", "float_forward",
    "int_rmsnorm", "rope_tables", "kv_head_of",
]
