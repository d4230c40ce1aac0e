"""Fingerprints: a digest of everything that determines a resumable job's result.

A job that resumes from shard files must know that the files were written for the same problem:
the same ``y0`` values, the same SDE (its parameters, buffers and attributes), the same score
function (its code, the values it captures, a model's weights). :func:`digest` walks such a
value and hashes what it finds:

- tensors and NumPy arrays: dtype, shape and the bytes of their values (not their device);
- numbers, strings, bytes, ``None``, dtypes, and lists, tuples, sets and dicts of them;
- ``nn.Module``: its class, the tensors of its ``state_dict`` and non-persistent buffers, and
  the public attributes of each submodule (``mu``, ``sigma``, ...);
- plain Python functions: their qualified name, code object (bytecode, constants, names),
  defaults, the values their closure captures and the module-level values they read;
- bound methods and ``functools.partial``: the function and what is bound to it;
- other objects: their class and their attributes (``vars``, or ``__slots__``);
- the classes of objects and modules: their qualified name and the code of the methods they
  define.

Functions, classes and objects of the standard library and of ``torch`` other than tensors and
modules (a logger, a lock, a file, a compiler's cache) count by their qualified name only:
their state differs between ranks and reruns but is no part of the problem (namespaces, such
as parsed command-line arguments, are hashed by their values).

What cannot be seen (an extension object without attributes, a value computed on the fly, a
file read by the score function) adds only its type; such a job should pass ``fingerprint=``.
Devices are reduced to their type (``cuda``, not ``cuda:1``) so that the ranks of a group, each
on its own GPU, agree. The walk is deterministic (sets and dicts are sorted, no ``id`` or
``repr`` of an object enters it), so every process and every rerun finds the same digest.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import re
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

MAX_DEPTH = 12  # deeper values add their type only: bounds the walk of large object graphs
_DEVICE_STRING = re.compile(r"^(cpu|cuda|mps|xpu|hip|meta|npu|xla)(:\d+)?$")
# Library code and objects are hashed by name only: a logger, a lock, a file reachable from a
# score function hold state that differs between ranks and runs but not the result.
_LIBRARIES = frozenset(sys.stdlib_module_names) | {"builtins", "torch"}
_NAMESPACES = (types.SimpleNamespace, argparse.Namespace)  # standard, but plain values

Fingerprint = str | bytes | int


def digest(value: Any) -> str:
    """A ``"sha256:..."`` digest of ``value`` and everything it holds (see the module doc)."""
    walker = _Walker()
    walker.value(value, 0)
    return "sha256:" + walker.hash.hexdigest()


def check_fingerprint(fingerprint: object) -> Fingerprint | None:
    """``fingerprint`` if it is ``None``, a ``str``, ``bytes`` or an ``int``; else a TypeError."""
    if fingerprint is None or (
        isinstance(fingerprint, (str, bytes, int)) and not isinstance(fingerprint, bool)
    ):
        return fingerprint
    raise TypeError(
        "fingerprint must be a str, bytes or int that identifies what the job cannot hash "
        "itself (e.g. the values a closure captures, a model's version), or None; got "
        f"{type(fingerprint).__name__} {fingerprint!r:.80}"
    )


class _Walker:
    """Feeds a value's parts into one SHA-256 as tagged, length-prefixed tokens."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.seen: dict[int, int] = {}  # id -> order of first visit, for shared and cyclic parts
        self.alive: list[object] = []  # keeps visited objects alive so their ids stay unique

    def token(self, tag: str, data: bytes = b"") -> None:
        self.hash.update(f"{tag}:{len(data)}:".encode())
        self.hash.update(data)

    def text(self, tag: str, text: str) -> None:
        self.token(tag, text.encode("utf-8", "surrogatepass"))

    def visit(self, obj: object) -> bool:
        """Whether ``obj`` is new; a repeat adds a reference to its first visit instead."""
        key = id(obj)
        if key in self.seen:
            self.token("ref", str(self.seen[key]).encode())
            return False
        self.seen[key] = len(self.seen)
        self.alive.append(obj)
        return True

    def value(self, value: Any, depth: int) -> None:
        if self.primitive(value):
            return
        if depth > MAX_DEPTH:
            self.text("deep", _type_name(type(value)))
            return
        if isinstance(value, torch.Tensor):
            self.tensor(value)
        elif _is_array(value):
            self.token("array", f"{value.dtype.str}{value.shape}".encode())
            self.token("bytes", value.tobytes())
        elif not self.visit(value):
            return
        elif isinstance(value, (list, tuple)):
            self.token(type(value).__name__, str(len(value)).encode())
            for item in value:
                self.value(item, depth + 1)
        elif isinstance(value, (set, frozenset)):
            self.unordered(value)
        elif isinstance(value, Mapping):
            self.mapping(value, depth)
        elif isinstance(value, type):
            self.cls(value)
        elif isinstance(value, types.ModuleType):
            self.text("module", value.__name__)
        elif isinstance(value, types.FunctionType):
            self.function(value, depth)
        elif isinstance(value, types.MethodType):
            self.token("method")
            self.value(value.__func__, depth + 1)
            self.value(value.__self__, depth + 1)
        elif isinstance(value, functools.partial):
            self.token("partial")
            for part in (value.func, value.args, value.keywords):
                self.value(part, depth + 1)
        elif isinstance(value, nn.Module):
            self.module(value, depth)
        else:
            self.instance(value, depth)

    def primitive(self, value: Any) -> bool:
        """Hash a value that has no parts; whether it was one."""
        if value is None or isinstance(value, (bool, int, float, complex)):
            self.text(type(value).__name__, repr(value))
        elif isinstance(value, str):
            self.text("str", _DEVICE_STRING.sub(r"\1", value))
        elif isinstance(value, (bytes, bytearray)):
            self.token("bytes", bytes(value))
        elif isinstance(value, torch.dtype):
            self.text("dtype", str(value))
        elif isinstance(value, torch.device):
            self.text("device", value.type)  # not the index: each rank has its own GPU
        elif isinstance(value, types.CodeType):
            self.code(value)
        elif isinstance(value, types.BuiltinFunctionType):
            self.text("builtin", f"{value.__module__}.{value.__qualname__}")
        else:
            return False
        return True

    def tensor(self, tensor: torch.Tensor) -> None:
        self.text("tensor", f"{tensor.dtype}{tuple(tensor.shape)}")
        try:
            flat = tensor.detach().resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
            self.token("bytes", flat.view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError, NotImplementedError):  # sparse, quantized, meta
            self.text("layout", str(tensor.layout))

    def unordered(self, items: Iterable[Any]) -> None:
        """A set, in an order that does not depend on hash randomisation."""
        parts = sorted(digest(item) for item in items)
        self.token("set", "".join(parts).encode())

    def mapping(self, mapping: Mapping[Any, Any], depth: int) -> None:
        entries = sorted(((digest(k), k, v) for k, v in mapping.items()), key=lambda e: e[0])
        self.token("dict", str(len(entries)).encode())
        for _, key, item in entries:
            self.value(key, depth + 1)
            self.value(item, depth + 1)

    def code(self, code: types.CodeType) -> None:
        """Bytecode, constants (nested functions' code too) and names; not line numbers."""
        self.text("code", code.co_name)
        self.token("co_code", code.co_code)
        self.text("co_names", ",".join(code.co_names))
        for const in code.co_consts:
            self.const(const)

    def const(self, const: object) -> None:
        """A constant of a code object: a primitive, code, or a tuple or frozenset of them."""
        if isinstance(const, tuple):
            self.token("tuple", str(len(const)).encode())
            for item in const:
                self.const(item)
        elif isinstance(const, frozenset):
            self.unordered(const)
        elif not self.primitive(const):
            self.text("const", _type_name(type(const)))

    def function(self, fn: types.FunctionType, depth: int) -> None:
        """A function: its name; and unless it is the standard library's or torch's (whose
        internals are no part of the user's problem), its code, defaults, captured values and
        the module-level values it reads."""
        self.text("function", f"{fn.__module__}.{fn.__qualname__}")
        if _in_library(fn.__module__):
            return
        self.code(fn.__code__)
        self.value(fn.__defaults__, depth + 1)
        self.value(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                self.token("empty-cell")
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                found = fn.__globals__[name]
                if not isinstance(found, (types.ModuleType, type)):
                    self.text("global", name)
                    self.value(found, depth + 1)

    def cls(self, cls: type) -> None:
        """A class: its name, and the code of the methods it and its bases define."""
        self.text("class", _type_name(cls))
        for base in cls.__mro__:
            if _in_library(base.__module__):
                continue
            for name, member in sorted(vars(base).items(), key=lambda item: item[0]):
                function = _function_of(member)
                if function is not None:
                    self.text("member", f"{base.__qualname__}.{name}")
                    self.code(function.__code__)

    def typed(self, obj: object) -> None:
        cls = type(obj)
        if self.visit(cls):
            self.cls(cls)

    def module(self, module: nn.Module, depth: int) -> None:
        """A module's class, tensors and the plain attributes of each submodule."""
        self.typed(module)
        state = module.state_dict()
        for name, buffer in module.named_buffers():
            state.setdefault(name, buffer)  # non-persistent buffers are not in state_dict
        for name in sorted(state):
            self.text("state", name)
            self.value(state[name], depth + 1)
        for name, sub in module.named_modules():
            self.text("submodule", name)
            self.typed(sub)
            public = {k: v for k, v in vars(sub).items() if not k.startswith("_")}
            self.mapping(public, depth)

    def instance(self, obj: object, depth: int) -> None:
        """Any other object: its class and its attributes (standard library objects other
        than namespaces: their class only)."""
        self.typed(obj)
        if _in_library(type(obj).__module__) and not isinstance(obj, _NAMESPACES):
            return
        attributes: dict[str, Any] = {}
        if hasattr(obj, "__dict__"):
            attributes.update(vars(obj))
        for base in type(obj).__mro__:
            for slot in getattr(base, "__slots__", ()):
                if isinstance(slot, str) and slot != "__dict__" and hasattr(obj, slot):
                    attributes[slot] = getattr(obj, slot)
        self.mapping(attributes, depth)


def _in_library(module: str | None) -> bool:
    """Whether ``module`` is of the standard library or torch: code that is not the user's to
    change between runs, and state (loggers, locks, compiler caches) that is no part of the
    problem."""
    return (module or "builtins").split(".")[0] in _LIBRARIES


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_array(value: object) -> bool:
    """A NumPy array, recognised without importing NumPy where it is not loaded."""
    cls = type(value)
    return cls.__module__ == "numpy" and cls.__name__ == "ndarray"


def _function_of(member: object) -> types.FunctionType | None:
    """The function behind a class member: a method, static/class method or property."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    return member if isinstance(member, types.FunctionType) else None


def _global_names(code: types.CodeType) -> set[str]:
    """The names ``code`` and the code nested in it may read from the module's globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
