"""Settings as values: frozen dataclasses generated from the tables of :mod:`onnx2snn.settings`,
and the check of a call's keywords against them.

- :class:`ConvertConfig`: what ``convert`` does, and what is saved with the SNN (``SAVED``);
  a settings search's candidate is ``dataclasses.replace`` of one (and its cache key).
- :class:`SearchConfig`: the search's own settings (``convert(..., target=0.99, search=...)``).
- :class:`ConvertRun` / :class:`FinetuneRun`: run-time matters that change how, not what
  (batch size, device, progress, distributed, preprocessing): never saved.
- :class:`FinetuneConfig`: the training settings of ``finetune``.

A row added to a table becomes a field here, a keyword of the function and (with a flag) a
command-line option, with no other edit. Unknown keywords get a "did you mean"; old names
(``RENAMED``) still work with a DeprecationWarning.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from typing import Any, Iterable, Mapping

from . import settings
from .errors import ConfigError


class FrozenDict(dict):
    """A dict that can be hashed (a config's ``replace_activations``); changing it is an error."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):  # copy / pickle without the refused __setitem__
        return (FrozenDict, (dict(self),))

    def _refuse(self, *args, **kwargs):
        raise TypeError("a config's mappings are frozen: use dataclasses.replace(config, name={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _post_init(self) -> None:
    for f in dataclasses.fields(self):
        object.__setattr__(self, f.name, _frozen(getattr(self, f.name)))


def _make(name: str, table: settings.Table, names: Iterable[str], doc: str, **methods):
    fields = [(n, Any, dataclasses.field(default=table[n].default, metadata={"help": table[n].help}))
              for n in names]
    ns = {"__post_init__": _post_init, "__doc__": doc, "table": table, **methods}
    cls = dataclasses.make_dataclass(name, fields, frozen=True, namespace=ns)
    cls.__module__ = __name__
    return cls


def _to_dict(self) -> dict:
    """The config as ``snn.config`` saves it (:func:`onnx2snn.settings.snn_config`)."""
    return settings.snn_config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@classmethod
def _from_saved(cls, config: Mapping[str, Any]):
    """The config of a saved ``snn.config`` (any version: a key it lacks reads as files from
    before the setting meant, an old key name as its new one)."""
    return cls(**{f.name: settings.saved(config, f.name) for f in dataclasses.fields(cls)})


def _kw(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


ConvertConfig = _make("ConvertConfig", settings.CONVERT, settings.SAVED,
                      "What convert does, as saved with the SNN (onnx2snn.settings.SAVED); frozen: "
                      "dataclasses.replace(config, timesteps=8) gives another.",
                      to_dict=_to_dict, from_saved=_from_saved, keywords=_kw)
CONVERT_RUN = tuple(n for n in settings.CONVERT if n not in settings.SAVED and n not in settings.SEARCH_KEYWORDS
                    and n != "calibration_data")
ConvertRun = _make("ConvertRun", settings.CONVERT, CONVERT_RUN,
                   "convert's run-time matters (never saved): batches, progress, devices, preprocessing.",
                   keywords=_kw)
SearchConfig = _make("SearchConfig", settings.SEARCH, settings.SEARCH,
                     "The settings search's own settings (convert(..., target=0.99, search=SearchConfig(...)));"
                     " None values: by kind of network.", keywords=_kw)
FinetuneConfig = _make("FinetuneConfig", settings.FINETUNE,
                       [n for n in settings.FINETUNE if n not in settings.RUN_TIME],
                       "finetune's training settings (onnx2snn.settings.FINETUNE).", keywords=_kw)
FinetuneRun = _make("FinetuneRun", settings.FINETUNE, [n for n in settings.FINETUNE if n in settings.RUN_TIME],
                    "finetune's run-time matters: devices, progress, data handling.", keywords=_kw)


def names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def keywords(fn: str, given: Mapping[str, Any], known: Iterable[str], stacklevel: int = 4) -> dict:
    """``given`` with old names (``settings.RENAMED``) renamed, warning once each; an unknown
    name is a ConfigError with the closest known one."""
    known = tuple(known)
    out: dict = {}
    for k, v in given.items():
        new = settings.RENAMED.get(k)
        if new in known and k not in known:
            if new in given:
                raise ConfigError(f"{fn}: {k}= is the old name of {new}=: pass only {new}=", new)
            warnings.warn(f"{fn}({k}=...) is now {fn}({new}=...); the old name will be removed",
                          DeprecationWarning, stacklevel=stacklevel)
            k = new
        elif k not in known:
            close = difflib.get_close_matches(k, list(known) + [o for o, n in settings.RENAMED.items() if n in known],
                                              n=1, cutoff=0.6)
            hint = f"did you mean {settings.RENAMED.get(close[0], close[0])}=? " if close else ""
            raise ConfigError(f"{fn}() got an unknown setting {k}=: {hint}Its settings are listed in "
                              f"onnx2snn.settings ({', '.join(sorted(known))})", k)
        out[k] = v
    return out


def _config_of(fn: str, cls, config: Any, given: Mapping[str, Any]):
    """``config`` (an instance, a dict of its fields, a saved ``snn.config``, or None) with the
    keywords ``given`` of its fields replaced."""
    own = {k: v for k, v in given.items() if k in names(cls)}
    if config is None:
        return cls(**own)
    if isinstance(config, cls):
        return dataclasses.replace(config, **own)
    if isinstance(config, Mapping):
        if "ibt_levels" in config and hasattr(cls, "from_saved"):  # a saved snn.config: read as load reads it
            return dataclasses.replace(cls.from_saved(config), **own)
        return cls(**{**keywords(fn, config, names(cls), stacklevel=5), **own})
    raise ConfigError(f"{fn}: config must be a {cls.__name__} (or a dict of its fields), got "
                      f"{type(config).__name__}", "config")


def convert_settings(config: Any, search: Any, given: Mapping[str, Any]):
    """(ConvertConfig, ConvertRun, SearchConfig or None, whether search settings were given) of
    ``convert``'s arguments; ``given``: its ``**settings``, checked against the table."""
    kw = keywords("convert", given, [n for n in settings.CONVERT if n not in ("calibration_data", "target")],
                  stacklevel=4)
    if "search" in kw:  # tune_options=, the old name of search=
        if search is not None:
            raise ConfigError("convert: tune_options= is the old name of search=: pass only search=", "search")
        search = kw.pop("search")
    cfg = _config_of("convert", ConvertConfig, config, kw)
    run = ConvertRun(**{k: v for k, v in kw.items() if k in CONVERT_RUN})
    steered = search is not None or "objective" in kw
    if search is None:
        search = {}
    sc = _config_of("SearchConfig", SearchConfig, search, {})
    if "objective" in kw:
        sc = dataclasses.replace(sc, objective=kw["objective"])
    return cfg, run, sc, steered


def finetune_settings(config: Any, given: Mapping[str, Any]):
    """(FinetuneConfig, FinetuneRun) of ``finetune``'s arguments."""
    kw = keywords("finetune", given, [n for n in settings.FINETUNE], stacklevel=4)
    cfg = _config_of("finetune", FinetuneConfig, config, kw)
    return cfg, FinetuneRun(**{k: v for k, v in kw.items() if k in names(FinetuneRun)})


__all__ = ["ConvertConfig", "ConvertRun", "SearchConfig", "FinetuneConfig", "FinetuneRun", "FrozenDict", "keywords",
           "convert_settings", "finetune_settings", "names"]
