"""Test-only stand-in for flash-attn's compiled CUDA extension.

flash-attn installs its Python package without the CUDA kernels on a CPU machine
(FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE), but `import flash_attn` still imports this module. The tests
never call a flash-attention kernel (the tiny model runs with eager/sdpa attention on CPU).
"""
