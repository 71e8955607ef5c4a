"""fastargs plumbing shared by the top-level scripts: parse, validate, fail loudly."""
from __future__ import annotations

import difflib
import json
import os
import sys
from argparse import ArgumentParser
from typing import Iterable, List, Optional, Sequence, Tuple

from fastargs import get_current_config
from fastargs.validation import Checker


class Flag(Checker):
    """A boolean that also reads 'false'/'0' from the command line correctly
    (fastargs' own Bool turns any non-empty string into True)."""

    def check(self, value):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ('1', 'true', 'yes', 'on'):
            return True
        if text in ('0', 'false', 'no', 'off'):
            return False
        raise ValueError(value)

    def help(self):
        return "true or false"


class ConfigError(ValueError):
    """A recipe or command line that names no declared option, or a recipe file that cannot be
    read (the scripts print it and exit with status 2)."""


def closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most like `name`, or None when none is close. A name cut short
    (`max_res`) means the candidate it begins (`max_resolution`), though difflib finds
    another more alike (`max_pixels`); so candidates that `name` begins (its last part at least
    two characters) come first, the most alike of them, then difflib's closest."""
    candidates = sorted(set(candidates))
    if len(name.lstrip('-').rsplit('.', 1)[-1]) >= 2:
        begun = [c for c in candidates if c.startswith(name) and c != name]
        if begun:
            return difflib.get_close_matches(name, begun, n=1, cutoff=0)[0]
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_keys(data: dict, known: Iterable[Tuple[str, ...]]) -> List[str]:
    """One message per key of a loaded recipe ({section: {key: value}}, or dotted keys as
    fastargs also reads them) that names no declared option `known` (paths such as
    ('training', 'epochs')), with its closest valid key. Values are not judged here."""
    known = set(known)
    prefixes = {path[:depth] for path in known for depth in range(1, len(path) + 1)}
    errors = []

    def walk(mapping: dict, prefix: Tuple[str, ...]) -> None:
        for key, value in mapping.items():
            path = prefix + tuple(str(key).split('.'))
            for depth in range(len(prefix), len(path)):
                if path[:depth + 1] in prefixes:
                    continue
                parent = path[:depth]
                siblings = {p[depth] for p in prefixes if len(p) > depth and p[:depth] == parent}
                match = closest(path[depth], siblings)
                what = 'section' if depth == 0 else 'key'
                hint = (f"did you mean {'.'.join(parent + (match,))}?" if match else
                        f"known: {', '.join(sorted(siblings))}")
                errors.append(f"unknown {what} {'.'.join(path[:depth + 1])}; {hint}")
                break
            else:
                if path in known:
                    continue  # a value: its option's own check judges it
                if isinstance(value, dict):
                    walk(value, path)
                elif value is not None:  # `model:` with nothing under it is an empty section
                    name = '.'.join(path)
                    errors.append(f"{name} is a section: give its keys ({name}: {{key: value}}), "
                                  f"not {value!r}")

    walk(data, ())
    return errors


def read_config_file(path: str) -> dict:
    """A `--config-file` as a dict: JSON, else YAML (as fastargs reads them); an empty file is
    {}. Raises ConfigError for a file that is missing, unreadable or not a mapping."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"--config-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config-file {path}: cannot read it "
                          f"({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except ValueError:
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"--config-file {path}: neither JSON nor YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config-file {path}: expected sections of keys "
                          f"(section: {{key: value}}), got a {type(data).__name__}")
    return data


def unknown_arguments(extras: Sequence[str], candidates: Iterable[str]) -> List[str]:
    """One message per command-line token argparse did not take, with the closest option."""
    candidates = sorted(set(candidates))
    errors, after_option = [], False
    for token in extras:
        if token.startswith('-'):
            name = token.split('=', 1)[0]
            match = closest(name, candidates)
            errors.append(f"unknown option {name}" + (f"; did you mean {match}?" if match else
                                                       " (see --help)"))
            after_option = '=' not in token
        elif not after_option:
            errors.append(f"unexpected argument {token!r}: options are --section.key=value")
        else:
            after_option = False  # the value of the unknown option just named
    return errors


class StrictParser(ArgumentParser):
    """argparse without abbreviations (`--training.epoch` is not `--training.epochs`), whose
    unknown options are errors naming the closest known option (exit status 2)."""

    def __init__(self, *args, aliases: Sequence[str] = (), **kwargs):
        kwargs['allow_abbrev'] = False
        super().__init__(*args, **kwargs)
        self.aliases = list(aliases)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            known = [o for o in self._option_string_actions if o.startswith('--')]
            errors = unknown_arguments(extras, known + self.aliases)
            self.exit(2, ''.join(f"error: {e}\n" for e in errors))
        return parsed


def split_config_files(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(the `--config-file`/`-C` paths in order, the other arguments in order)."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument('--config-file', '-C', action='append', default=[])
    found, rest = pre.parse_known_args(list(argv))
    return found.config_file, rest


def load_config(description: str, aliases: Optional[dict] = None):
    """Collect `--config-file` YAML/JSON and `--section.key=value` options; exit 2 on errors.
    `aliases` maps short flags to options, e.g. {'--resume': '--training.resume=true'}.

    Recipe files are read here, not by fastargs (which ignores keys it does not know): every
    key must name a declared option, and a missing or unreadable file is one line `error: ...`.
    Later files win, and the command line wins over the files."""
    config = get_current_config()
    if {'-h', '--help'} & set(sys.argv[1:]):
        try:
            print(plain_help(description, config, aliases or {}), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if aliases:
        sys.argv[1:] = [aliases.get(arg, arg) for arg in sys.argv[1:]]
    argv = sys.argv[1:]
    files, rest = split_config_files(argv)
    errors, recipes = [], []
    for path in files:
        try:
            recipe = read_config_file(path)
        except ConfigError as e:
            errors.append(str(e))
            continue
        errors += [f"{path}: {message}" for message in unknown_keys(recipe, config.entries)]
        recipes.append(recipe)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for recipe in recipes:
        config.collect(recipe)
    parser = StrictParser(description=description, aliases=list(aliases or ()))
    sys.argv[1:] = rest  # fastargs parses sys.argv; the files are collected already
    try:
        config.augment_argparse(parser)
        config.collect_argparse_args(parser)
    finally:
        sys.argv[1:] = argv
    errors = config.validate(mode='errordict')
    if errors:
        for path, error in errors.items():
            param = config.entries[path]
            got = config.content.get(path, '')
            print(f"error: {where_set(path, rest, files, recipes)}: expected "
                  f"{param.checker.help()}, got {got!r}"
                  + (" (required)" if type(error).__name__ == 'MissingValueError' else ''),
                  file=sys.stderr)
        sys.exit(2)
    return config


def where_set(path: Tuple[str, ...], args: Sequence[str], files: Sequence[str],
              recipes: Sequence[dict]) -> str:
    """Where the value of option `path` came from, as an error names it: `--section.key` from
    the command line (which wins), else `<file>: key section.key` of the last recipe that sets
    it (later files win); an option nobody set (a required one) is named as the option."""
    option = '--' + '.'.join(path)
    if any(arg.split('=', 1)[0] == option for arg in args):
        return option
    for file, recipe in reversed(list(zip(files, recipes))):
        if path in set(recipe_paths(recipe)):
            return f"{file}: key {'.'.join(path)}"
    return option


def recipe_paths(mapping: dict, prefix: Tuple[str, ...] = ()):
    """The option paths a recipe sets, in either spelling (sections of keys, dotted keys)."""
    for key, value in mapping.items():
        path = prefix + tuple(str(key).split('.'))
        if isinstance(value, dict):
            yield from recipe_paths(value, path)
        else:
            yield path


def plain_help(description: str, config, aliases: dict, width: int = 100) -> str:
    """--help as plain text that reads the same in a terminal, a pipe or a log: the
    description, then every option with its default and what it takes, by section."""
    import textwrap
    lines = [description.strip(), '', 'usage: --config-file FILE ... --section.key=value ...',
             '  --config-file FILE  a YAML or JSON recipe (repeatable; later ones win, then the '
             'command line)']
    lines += [f"  {flag:<18} same as {option}" for flag, option in aliases.items()]
    sections = {}
    for path, param in config.entries.items():
        sections.setdefault(path[0], []).append((path, param))
    for name, params in sections.items():
        lines += ['', f"{name}:"]
        for path, param in params:
            text = (f"{param.desc}; {param.checker.help()}; default "
                    f"{getattr(param, 'default', None)!r}")
            lines += textwrap.wrap(text, width, initial_indent=f"  --{'.'.join(path)}  ",
                                   subsequent_indent=' ' * 6)
    return '\n'.join(lines)


def section(config, name: str) -> dict:
    """The values of one fastargs section as a plain dict (defaults filled in)."""
    return {path[1]: config[path] for path in config.entries if path[0] == name}
