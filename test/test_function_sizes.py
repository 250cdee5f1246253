"""House limit on the package source (issue #13): no function over 80 lines, numba kernels excepted.

A function's size is counted by the AST, ``end_lineno - first_line + 1``, where ``first_line`` is
its first decorator's line (or the ``def`` line): decorators, docstring, comments and blank lines
all count. Every function and method is counted on its own, nested ones too (a nested function's
lines also count towards the function around it, a nested numba kernel's excepted). Functions
decorated with a numba jit (``@njit``, ``@nb.njit(...)``, ``@numba.jit``, ``@cuda.jit``,
``@vectorize`` ...) are exempt: numba compiles a kernel as one unit and splitting it costs calls in
the hot loop; a factory that compiles one per robot size (``gpu.kernels.get_kernel``) is counted by
its own lines.

``ALLOWED`` lists today's offenders with their current size. It can only shrink: the test fails
for a new offender, for an allowed one that grew, and for an allowed one that is now within the
limit or gone (remove its entry). Lower an entry's number when its function shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

PKG = Path(__file__).resolve().parent.parent / 'rt_safe_rl'
MAX_LINES = 80

# numba decorators (the last part of the dotted name) and the names numba is reached through
NUMBA_JIT = {'njit', 'jit', 'vectorize', 'guvectorize', 'cfunc', 'generated_jit', 'stencil'}
NUMBA_ROOTS = {'', 'nb', 'numba', 'cuda', 'nb.cuda', 'numba.cuda'}

Fn: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef

# TEMPORARY (issue #13): 'module:qualname' -> its size today. Split them; remove an entry once its
# function is <= 80 lines; never add one and never raise a number.
ALLOWED: dict[str, int] = {}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f'{_dotted(node.value)}.{node.attr}'
    return ''


def _is_numba_jit(fn: Fn) -> bool:
    for dec in fn.decorator_list:
        root, _, last = _dotted(dec).rpartition('.')
        if last in NUMBA_JIT and root in NUMBA_ROOTS:
            return True
    return False


def _span(fn: Fn) -> int:
    first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
    assert fn.end_lineno is not None
    return fn.end_lineno - first + 1


def _size(fn: Fn) -> int:
    """Lines of `fn` less those of the numba kernels defined inside it (a factory that compiles a
    kernel per robot size is counted by its own Python, the exempt kernel's lines are not)."""
    kernels = [k for _, k in _functions(fn) if _is_numba_jit(k)]
    outer = [k for k in kernels if not any(k is not o and _inside(k, o) for o in kernels)]
    return _span(fn) - sum(_span(k) for k in outer)


def _inside(inner: Fn, outer: Fn) -> bool:
    return outer.lineno <= inner.lineno and (inner.end_lineno or 0) <= (outer.end_lineno or 0)


def _functions(tree: ast.AST, prefix: str = '') -> Iterator[tuple[str, Fn]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _functions(node, f'{prefix}{node.name}.')
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f'{prefix}{node.name}.')
        else:
            yield from _functions(node, prefix)  # defs under if / try / with blocks


def _sizes() -> dict[str, int]:
    """'module:qualname' -> lines of every non-numba function in the package (a repeated qualname,
    e.g. a property's setter, gets a ``[2]`` suffix)."""
    out: dict[str, int] = {}
    for path in sorted(PKG.rglob('*.py')):
        module = '.'.join(path.relative_to(PKG.parent).with_suffix('').parts)
        for qualname, fn in _functions(ast.parse(path.read_text(), str(path))):
            if _is_numba_jit(fn):
                continue
            key, n = f'{module}:{qualname}', 2
            while key in out:
                key, n = f'{module}:{qualname}[{n}]', n + 1
            out[key] = _size(fn)
    return out


def test_the_counter_sees_decorators_nesting_and_numba() -> None:
    """The rules of the count, on a small source: decorators count, nested and class functions are
    found, numba kernels are exempt, torch's ``@torch.jit.export`` is not."""
    src = (
        'import numba as nb\n'
        'class A:\n'
        '    @staticmethod\n'
        '    def f():\n'
        '        def g():\n'
        '            pass\n'
        '@nb.njit(cache=True)\n'
        'def k():\n'
        '    pass\n'
        '@torch.jit.export\n'
        'def t():\n'
        '    pass\n'
        'def factory(n):\n'
        '    @cuda.jit\n'
        '    def kern(x):\n'
        '        x[0] = n\n'
        '        x[1] = n\n'
        '    return kern\n'
    )
    found = {q: (_size(fn), _is_numba_jit(fn)) for q, fn in _functions(ast.parse(src))}
    assert found == {
        'A.f': (4, False),
        'A.f.g': (2, False),
        'k': (3, True),
        't': (3, False),
        'factory': (2, False),  # its kernel's 4 lines are exempt
        'factory.kern': (4, True),
    }


def test_no_new_function_over_the_limit() -> None:
    """Every non-numba function <= 80 lines, except the allowed ones, which do not grow."""
    sizes = _sizes()
    new = {k: n for k, n in sizes.items() if n > MAX_LINES and k not in ALLOWED}
    grew = {k: f'{ALLOWED[k]} -> {n}' for k, n in sizes.items() if k in ALLOWED and n > ALLOWED[k]}
    assert not new, f'functions over {MAX_LINES} lines (split them): {new}'
    assert not grew, f'allowed functions that grew (split them, do not raise the number): {grew}'


def test_allowed_list_only_shrinks() -> None:
    """An allowed entry whose function is now <= 80 lines (or gone) is removed from ALLOWED."""
    sizes = _sizes()
    stale = sorted(k for k in ALLOWED if sizes.get(k, 0) <= MAX_LINES)
    assert not stale, f'remove from ALLOWED in test_function_sizes.py: {stale}'
