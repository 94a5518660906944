"""Fixes that make a page view cheaper than Bokeh's own build of the page: the same document and the same messages,
for less CPU. tests/test_equivalence.py proves "the same" by comparing the serialized documents and patches of
every shipped app and a corpus of Bokeh's own examples, built with and without these fixes."""

from __future__ import annotations

import os

from bokeh_stack.config import topology
from bokeh_stack.config.expect import Expect
from bokeh_stack.patches.patching import Fix, _replace

# What a cached default may be: values nobody can change in place, so one object serves every model.
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


def _immutable(value: object) -> bool:
    if type(value) in _IMMUTABLE:
        return True
    if type(value) is tuple:
        return all(_immutable(v) for v in value)
    return False


def immutable_defaults_once() -> None:
    """Work out each immutable property default once per (model class, property), not on every read.

    A property nobody set is read through its default: Bokeh copies the raw default, validates it and transforms
    it again at every read (`PropertyDescriptor._get_default` -> `themed_default` -> `prepare_value`, with a walk
    of the class's MRO for overridden defaults). Building and serializing a dashboard page reads a few thousand
    defaults: about 70% of the CPU of its build and serialization. Only defaults that are immutable values (None,
    numbers, strings, tuples of them), neither computed by a function nor given by a theme, are kept; a mutable
    default (a list, a dict, a model) is still made afresh for each model, and a theme's value still wins.
    """
    from bokeh.core.property.descriptors import PropertyDescriptor
    from bokeh.core.property.singletons import Intrinsic, Undefined

    get_default = PropertyDescriptor._get_default
    cache: dict[tuple[int, type], tuple[PropertyDescriptor, object]] = {}
    not_cached = object()

    def cached_get_default(self: PropertyDescriptor, obj):
        themed = obj.themed_values()
        if themed is not None and self.name in themed:
            return get_default(self, obj)
        key = (id(self), obj.__class__)
        hit = cache.get(key)
        if hit is not None and hit[0] is self:
            value = hit[1]
            return get_default(self, obj) if value is not_cached else value
        value = get_default(self, obj)
        stable = not self.has_unstable_default(obj) and self.name not in obj._unstable_default_values
        keep = stable and (_immutable(value) or value is Undefined or value is Intrinsic)
        cache[key] = (self, value if keep else not_cached)
        return value

    _replace(PropertyDescriptor, "_get_default", cached_get_default)


def unstable_defaults_known() -> None:
    """Tell once per (model class, property) whether a default is made afresh for each model.

    HasProps.__init__ asks it of every property of every new model, and `_get_default` of every default read; the
    answer (a property whose default is a function or holds models, or a class that overrides it with a function)
    depends on the property and the model's class alone: 13% of a dashboard page's build."""
    from bokeh.core.property.descriptors import PropertyDescriptor

    has_unstable_default = PropertyDescriptor.has_unstable_default
    known: dict[tuple[int, type], tuple[PropertyDescriptor, bool]] = {}

    def known_has_unstable_default(self: PropertyDescriptor, obj) -> bool:
        key = (id(self), obj.__class__)
        hit = known.get(key)
        if hit is None or hit[0] is not self:
            hit = known[key] = (self, has_unstable_default(self, obj))
        return hit[1]

    _replace(PropertyDescriptor, "has_unstable_default", known_has_unstable_default)


def themed_values_without_miss() -> None:
    """Read a model's theme values from its own attributes without raising AttributeError for every model without
    any. `HasProps.themed_values` is `getattr(self, "__themed_values__", None)`: for a model no theme touches, that
    goes through HasProps.__getattr__ (written for helpful error messages) and an exception, at every default read.
    `apply_theme` sets and deletes the attribute on the instance, so the instance's dict holds the same answer."""
    from bokeh.core.has_props import HasProps

    def themed_values(self: HasProps):
        return self.__dict__.get("__themed_values__")

    _replace(HasProps, "themed_values", themed_values)


class _ChecksOnlyWhenAsked:
    """Bokeh's settings as `Application.initialize_document` sees them, but with the document checks off unless
    BOKEH_VALIDATE_DOC is set."""

    def __init__(self, settings) -> None:
        self._settings = settings

    def perform_document_validation(self) -> bool:
        if os.environ.get(topology.VALIDATE_DOCUMENTS) is None:
            return False
        return self._settings.perform_document_validation()

    def __getattr__(self, name: str):
        return getattr(self._settings, name)


def validation_in_check_and_dev() -> None:
    """Leave Bokeh's integrity checks of each new document (`Document.validate`: every model's validators, 13% of
    a worker's CPU per page view; they only log) to `bokeh-stack check`, which builds every app once with them and
    shows what they found, and to `up --dev`. BOKEH_VALIDATE_DOC, when set, decides as in Bokeh."""
    import bokeh.application.application as application

    _replace(application, "settings", _ChecksOnlyWhenAsked(application.settings))


def cycles_broken_on_destroy() -> None:
    """Unlink a discarded session's models from one another, so that reference counting frees its document at
    once and no collection of the whole heap is needed for it.

    Each property value that is a container (a list, a dict, a column data source's data) names its owner models,
    which hold it: about 450 reference cycles per dashboard page, which Bokeh leaves to a full `gc.collect()` per
    discarded session. Here `Model.destroy` (which Bokeh calls for every model of a destroyed document) also drops
    those owner links, the defaults it made for the model and its callbacks, and the document's own config models
    are destroyed with it. A young collection then finds what little is left (fixes.coalesced_gc)."""
    from bokeh.core.property.wrappers import PropertyValueContainer
    from bokeh.document.document import Document
    from bokeh.model import Model

    destroy_model, destroy_document = Model.destroy, Document.destroy

    def destroy_unlinked(self: Model) -> None:
        values = (self._property_values, self._unstable_default_values, self._unstable_themed_values)
        for value in (v for d in values for v in d.values()):
            if isinstance(value, PropertyValueContainer):
                value._owners.clear()
        destroy_model(self)
        self._unstable_default_values.clear()
        self._unstable_themed_values.clear()
        self._callbacks.clear()
        self._event_callbacks.clear()

    def destroy_with_config(self: Document, session) -> None:
        config = list(self._config.references())
        destroy_document(self, session)
        for model in config:
            model.destroy()

    _replace(Model, "destroy", destroy_unlinked)
    _replace(Document, "destroy", destroy_with_config)


# A build waits on a timer this long, so every timer already due (another session's periodic update) runs first.
TIMERS_FIRST_S = 0.0001


def one_build_per_turn() -> None:
    """Build new sessions' documents one at a time, each after the timers already due.

    A worker is one event loop, and asyncio runs every callback that is ready in one turn: with 8 page requests
    ready at once, 8 builds ran back to back while a streaming session's due update waited for all of them (a
    stall of 8 builds). Here a build first waits for the one before it to finish, then on a timer, which runs after
    the timers due before it: another session's update waits for one build at most."""
    import asyncio

    from bokeh.server.contexts import ApplicationContext

    create = ApplicationContext.create_session_if_needed
    # The running loop's lock. A worker has one loop; a process that makes loops one after another (the tests) keeps
    # only the last one's.
    turn: dict[str, object] = {}

    async def create_in_turn(self: ApplicationContext, session_id, request=None, token=None):
        if session_id in self._sessions:  # nothing to build
            return await create(self, session_id, request, token)
        loop = asyncio.get_running_loop()
        if turn.get("loop") is not loop:
            turn.update(loop=loop, lock=asyncio.Lock())
        async with turn["lock"]:
            await asyncio.sleep(TIMERS_FIRST_S)
            return await create(self, session_id, request, token)

    _replace(ApplicationContext, "create_session_if_needed", create_in_turn)


DESCRIPTOR = "bokeh.core.property.descriptors:PropertyDescriptor"
FIXES = (
    Fix(
        "immutable_defaults_once",
        immutable_defaults_once,
        (
            Expect(
                f"{DESCRIPTOR}._get_default",
                params=("obj",),
                uses=("themed_values", "instance_default", "has_unstable_default", "_unstable_default_values"),
            ),
            Expect(f"{DESCRIPTOR}.instance_default", uses=("themed_default", "themed_values")),
            Expect("bokeh.core.property.bases:Property.themed_default", uses=("_overridden_defaults", "prepare_value")),
            Expect(f"{DESCRIPTOR}.has_unstable_default", params=("obj",), uses=("__overridden_defaults__",)),
            Expect("bokeh.core.property.singletons:Undefined"),
            Expect("bokeh.core.property.singletons:Intrinsic"),
        ),
    ),
    Fix(
        "unstable_defaults_known",
        unstable_defaults_known,
        (
            Expect(
                f"{DESCRIPTOR}.has_unstable_default",
                params=("obj",),
                uses=("_may_have_unstable_default", "is_unstable", "__overridden_defaults__", "get", "name"),
            ),
            Expect("bokeh.core.has_props:HasProps.__init__", uses=("has_unstable_default",)),
        ),
    ),
    Fix(
        "themed_values_without_miss",
        themed_values_without_miss,
        (
            Expect("bokeh.core.has_props:HasProps.themed_values", uses=("getattr",)),
            Expect("bokeh.core.has_props:HasProps.apply_theme", uses=("setattr", "delattr")),
        ),
    ),
    Fix(
        "cycles_broken_on_destroy",
        cycles_broken_on_destroy,
        (
            Expect("bokeh.model.model:Model.destroy", uses=("_property_values",)),
            Expect(
                "bokeh.core.has_props:HasProps.__init__", uses=("_unstable_default_values", "_unstable_themed_values")
            ),
            Expect("bokeh.core.property.wrappers:PropertyValueContainer._register_owner", uses=("_owners",)),
            Expect("bokeh.model.model:Model.__init__"),
            Expect("bokeh.util.callback_manager:PropertyCallbackManager.__init__", uses=("_callbacks",)),
            Expect("bokeh.util.callback_manager:EventCallbackManager.__init__", uses=("_event_callbacks",)),
            Expect("bokeh.document.document:Document.destroy", params=("session",), uses=("models", "destroy")),
            Expect("bokeh.document.document:Document.__init__", uses=("_config",)),
        ),
    ),
    Fix(
        "one_build_per_turn",
        one_build_per_turn,
        (
            Expect(
                "bokeh.server.contexts:ApplicationContext.create_session_if_needed",
                coroutine=True,
                params=("session_id", "request", "token"),
                uses=("_sessions", "initialize_document"),
            ),
        ),
    ),
    Fix(
        "validation_in_check_and_dev",
        validation_in_check_and_dev,
        (
            Expect("bokeh.application.application:settings"),
            Expect(
                "bokeh.application.application:Application.initialize_document",
                uses=("settings", "perform_document_validation", "validate"),
            ),
            Expect("bokeh.settings:Settings.perform_document_validation"),
        ),
    ),
)
