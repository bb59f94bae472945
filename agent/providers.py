"""STT, LLM and TTS for a call from settings: LiveKit Inference model names or provider plugins.

A model string `provider/model` (e.g. `openai/gpt-4.1-mini`) names a LiveKit Inference model and
needs LIVEKIT_API_KEY and LIVEKIT_API_SECRET. A string `provider:model` (e.g. `openai:gpt-4.1-mini`)
names an installed provider plugin, `livekit-plugins-<provider>`. Two LLMs make a FallbackAdapter.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from livekit.agents import inference, llm, stt, tts, vad

from config.settings import Settings

logger = logging.getLogger(__name__)

ModelKind = Literal["LLM", "STT", "TTS"]

NO_LLM_MESSAGE = (
    "No LLM configured: set LLM_MODEL, either to a LiveKit Inference model such as "
    "LLM_MODEL=openai/gpt-4.1-mini (with LIVEKIT_API_KEY and LIVEKIT_API_SECRET), or to a provider "
    "plugin model such as LLM_MODEL=openai:gpt-4.1-mini (with OPENAI_API_KEY and the "
    "livekit-plugins-openai package). Optionally set LLM_FALLBACK_MODEL too. "
    "Or run `python -m agent demo` for scripted demo calls that need no model."
)


class ModelConfigError(Exception):
    """The settings name a model that cannot be built; the message says which variable to fix."""


@dataclass(frozen=True, kw_only=True)
class CallModels:
    llm: llm.LLM[Any]
    stt: stt.STT[Any] | None
    tts: tts.TTS[Any] | None


def llm_problem(settings: Settings) -> str | None:
    """Why no LLM can be built from these settings, or None when one can."""
    try:
        build_llm(settings)
    except ModelConfigError as error:
        return str(error)
    return None


def build_models(settings: Settings) -> CallModels:
    """The call's models. Speech models that cannot be built are left out (text-only)."""
    return CallModels(
        llm=build_llm(settings),
        stt=_optional_speech("STT", settings.stt_model, settings, variable="STT_MODEL"),
        tts=_optional_speech("TTS", settings.tts_model, settings, variable="TTS_MODEL"),
    )


def build_llm(settings: Settings) -> llm.LLM[Any]:
    """The configured LLM, or a FallbackAdapter over it and LLM_FALLBACK_MODEL."""
    if settings.llm_model is None:
        raise ModelConfigError(NO_LLM_MESSAGE)
    primary: llm.LLM[Any] = _build("LLM", settings.llm_model, settings, variable="LLM_MODEL")
    if settings.llm_fallback_model is None:
        return primary
    fallback: llm.LLM[Any] = _build(
        "LLM", settings.llm_fallback_model, settings, variable="LLM_FALLBACK_MODEL"
    )
    return llm.FallbackAdapter([primary, fallback])


def load_vad() -> vad.VAD | None:
    """LiveKit's bundled Silero VAD (no download), or None when the native library is missing."""
    try:
        return inference.VAD()
    except (ImportError, OSError, RuntimeError) as error:
        logger.warning("VAD unavailable (%s); turn detection relies on the STT alone", error)
        return None


def _optional_speech(
    kind: ModelKind, model: str, settings: Settings, *, variable: str
) -> Any | None:
    try:
        return _build(kind, model, settings, variable=variable)
    except ModelConfigError as error:
        logger.warning("%s disabled, the session is text-only for it: %s", kind, error)
        return None


def _build(kind: ModelKind, model: str, settings: Settings, *, variable: str) -> Any:
    if ":" in model:
        provider, _, name = model.partition(":")
        return _from_plugin(kind, provider, name, settings, variable=variable)
    if "/" in model:
        return _from_inference(kind, model, settings, variable=variable)
    raise ModelConfigError(
        f"{variable}={model!r} is neither a LiveKit Inference model ('provider/model') "
        "nor a plugin model ('provider:model')"
    )


def _from_inference(kind: ModelKind, model: str, settings: Settings, *, variable: str) -> Any:
    if settings.livekit_api_key is None or settings.livekit_api_secret is None:
        raise ModelConfigError(
            f"{variable}={model} is a LiveKit Inference model: set LIVEKIT_API_KEY and "
            "LIVEKIT_API_SECRET"
        )
    key = settings.livekit_api_key.get_secret_value()
    secret = settings.livekit_api_secret.get_secret_value()
    try:
        if kind == "LLM":
            return inference.LLM(model=model, api_key=key, api_secret=secret)
        if kind == "STT":
            return inference.STT(model=model, api_key=key, api_secret=secret)
        return inference.TTS(model=model, api_key=key, api_secret=secret)
    except ValueError as error:
        raise ModelConfigError(f"{variable}={model}: {error}") from None


def _from_plugin(
    kind: ModelKind, provider: str, name: str, settings: Settings, *, variable: str
) -> Any:
    try:
        plugin = importlib.import_module(f"livekit.plugins.{provider}")
    except ImportError:
        raise ModelConfigError(
            f"{variable}={provider}:{name} needs the provider plugin: "
            f"pip install livekit-plugins-{provider}"
        ) from None
    factory = getattr(plugin, kind, None)
    if factory is None:
        raise ModelConfigError(f"{variable}: livekit-plugins-{provider} has no {kind}")
    options: dict[str, Any] = {"model": name}
    if provider == "openai":
        if settings.openai_api_key is None:
            raise ModelConfigError(f"{variable}={provider}:{name} needs OPENAI_API_KEY")
        options["api_key"] = settings.openai_api_key.get_secret_value()
    try:
        return factory(**options)
    except (TypeError, ValueError) as error:
        raise ModelConfigError(f"{variable}={provider}:{name}: {error}") from None
