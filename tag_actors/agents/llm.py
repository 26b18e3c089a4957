"""An agent whose decisions come from a language model behind an OpenAI-compatible chat-completions API.

At each ``act`` the agent renders a prompt from the observation (the named blocks of ``ctx.obs_layout``: the
children's messages, then the parent's instruction), the task text of its config and its action space, and asks
``POST {base_url}/chat/completions`` for a JSON reply constrained by a JSON schema
(``response_format = {"type": "json_schema", ...}``).

Prompt format. What a call costs is the number of prompt tokens the server has not seen before: a local
llama.cpp server evaluates new prompt tokens at ~120/s on 2 cores, and serves a prefix identical to its previous
prompt from its KV cache in milliseconds. So the prompt is two messages:

* ``system``: everything that never changes during a run, identical byte for byte across calls (and across the
  envs of a batch): the agent's role, the task, the reply format, and the observation format, i.e. the blocks in
  order with their sizes and how numbers are written. The server's prefix cache serves all of it after the
  first call.
* ``user``: only the numbers, one line per block, ``child_0: 3 -1 0 12 ...``. With ``number_format = "int"``
  (the default) each number is ``round(value * obs_scale)`` clipped to ``[-int_max, int_max]``: with the
  defaults (``obs_scale = 10``, ``int_max = 99``), at most 2 digits and a sign, space separated. SmolLM2's
  tokenizer splits digits, so 64 such numbers are 131 tokens (2.0 per number), against 382 (6.0) rounded to 2
  decimals. ``number_format = "digit"`` writes each number as one digit (``5 + round(value * obs_scale)``
  clipped to 0..9, fixed width, no separator: ``child_0: 5537...``), 1 token per number, 64 for the same
  block; ``"decimal"`` writes 2 decimals. The scale is stated once, in the system message.

Per decision of the balance top agent (4 children x 16 numbers, ``configs/balance_llm.toml``): ~240 static
tokens, then 87 new ones with ``digit``, 150 with ``int``, 403 with ``decimal``, and ~16 reply tokens
(``benchmarks/results/llm.md``; ``benchmarks/bench_llm.py`` prints them). Observations of the envs here change
in every component at every step, so sending "only what changed since the last call" would save nothing; it is
not done.

Replies:

=================  ============================================================================
action space       reply
=================  ============================================================================
``Discrete(n)``    ``{"action": k}`` with ``k`` an integer in ``0..n-1``
``MultiDiscrete``  ``{"goals": [g_0, ..., g_{k-1}]}`` with ``g_i`` an integer in ``0..nvec[i]-1``
``Box``            ``{"action": [x_1, ..., x_d]}``, ``d = flat_dim`` numbers (in ``[low, high]``)
=================  ============================================================================

Every reply is validated (JSON, key, type, length, bounds). Integers out of range are **rejected**; Box values
outside the bounds are **clipped** into them (``clip_box = true``, the default) or rejected (``clip_box =
false``); non-finite numbers are always rejected. A rejected reply, a timeout, an HTTP error status or a
connection failure never raises: the envs concerned get the ``fallback`` action and the outcome is counted in
``self.stats`` and reported to the optional ``on_call`` hook.

Calls run on an asyncio event loop of the agent's own, on uvloop (``tag_actors.agents.llm_http``: HTTP/1.1 over
asyncio streams). In ``subset`` mode up to ``concurrency`` calls are in flight at once, one per env, so a
server with several slots (``scripts/llm_server.py --slots N``) answers them together; ``shared`` mode makes one
call per ``act``. ``timeout_s`` bounds each call's whole exchange, connect to last byte.

The language model does not learn: ``observe`` / ``update`` are no-ops and ``ready()`` is always False.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import uvloop

from tag_actors.agents import llm_http
from tag_actors.agents.base import Agent, AgentContext, parse_params
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "timeout", "http_error", "connection_error", "bad_reply")
"""The outcome of one call, as counted in ``stats`` and passed to ``on_call``."""

FALLBACKS = ("hold", "zeros", "random")
BATCH_MODES = ("shared", "subset")
SCHEMA_STYLES = ("auto", "json_schema", "json_object")
NUMBER_FORMATS = ("int", "digit", "decimal")


def _http_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    return url


@dataclass
class LLMConfig:
    """Settings of an ``llm`` agent (the level's ``params`` table; checked by pydantic, see ``from_params``)."""

    __pydantic_config__ = pydantic.ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    base_url: Annotated[str, pydantic.AfterValidator(_http_url)] = "http://127.0.0.1:8000/v1"
    """Root of the OpenAI-compatible API; the agent posts to ``{base_url}/chat/completions``."""
    model: str = "local"
    """Model name sent in the request (llama_cpp.server serves its one model under any name)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key; unset or empty means no Authorization header."""
    temperature: Annotated[float, pydantic.Field(ge=0)] = 0.0
    """Sampling temperature (0 = greedy, reproducible with a local server)."""
    max_tokens: Annotated[int, pydantic.Field(ge=1)] = 128
    """Maximum tokens of one reply; a reply cut short is invalid JSON and counts as ``bad_reply``."""
    timeout_s: Annotated[float, pydantic.Field(gt=0)] = 10.0
    """Wall-clock bound of one call (connect, send, wait, read), in seconds."""
    task: str = ""
    """Description of the task shown to the model (empty: a generic line naming the environment)."""
    use_json_schema: bool = True
    """Send ``response_format`` with a JSON schema of the action; turn off for servers that reject it."""
    schema_style: Literal["auto", "json_schema", "json_object"] = "auto"
    """How the schema travels: ``json_schema`` (OpenAI: ``{"type": "json_schema", "json_schema": {...}}``),
    ``json_object`` (llama-cpp-python: ``{"type": "json_object", "schema": {...}}``) or ``auto`` (OpenAI's form
    first; if the server answers it with an HTTP error, the call is retried once in llama-cpp-python's form, and
    the form that worked is kept)."""
    fallback: Literal["hold", "zeros", "random"] = "hold"
    """Action of an env whose call failed: ``hold`` (previous action, zeros at first), ``zeros`` or ``random``."""
    batch_mode: Literal["shared", "subset"] = "shared"
    """``shared``: one call per ``act``, from the first masked env's observation, applied to every masked env;
    ``subset``: ``envs_per_call`` masked envs (round robin) get their own call, the others hold their action."""
    envs_per_call: Annotated[int, pydantic.Field(ge=1)] = 1
    """``subset`` mode: how many envs get a fresh decision (one call each) per ``act``."""
    concurrency: Annotated[int, pydantic.Field(ge=1)] = 1
    """``subset`` mode: how many calls are in flight at once (on the agent's asyncio loop)."""
    min_interval_s: Annotated[float, pydantic.Field(ge=0)] = 0.0
    """Wall-clock period: an ``act`` sooner than this after the last call makes no call and holds every action."""
    clip_box: bool = True
    """Box actions: clip values outside ``[low, high]`` into it (true) or reject the reply as ``bad_reply``."""
    number_format: Literal["int", "digit", "decimal"] = "int"
    """How observation numbers are written: ``int`` (``round(value * obs_scale)``, clipped to ``+-int_max``,
    space separated; ~2 tokens per number), ``digit`` (one digit per number, ``5 + round(value * obs_scale)``
    clipped to 0..9, no separator; 1 token per number) or ``decimal`` (2 decimals; ~6 tokens per number)."""
    obs_scale: Annotated[float, pydantic.Field(gt=0, allow_inf_nan=False)] = 10.0
    """``int`` and ``digit`` formats: the factor applied before rounding (10: one decimal of resolution; use
    about 4 with ``digit``, so that values in [-1.1, 1.1] keep distinct digits)."""
    int_max: Annotated[int, pydantic.Field(ge=1)] = 99
    """``int`` format: numbers are clipped to ``[-int_max, int_max]``, which bounds their width."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LLMConfig:
        """Build from a config table; unknown keys and bad values raise ValueError naming the key."""
        return parse_params(cls, params, "llm agent: params")


class BadReply(ValueError):
    """The server answered, but not with a valid action."""


# ----------------------------------------------------------------------------------------------- action space


def action_schema(space: Space) -> dict[str, Any]:
    """The JSON schema of a reply for ``space`` (see the module docstring)."""

    def int_range(n: int) -> dict[str, Any]:
        # ``enum`` is what grammar-constrained decoders (llama.cpp) enforce most reliably; min/max document it.
        s: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": n - 1}
        if n <= 64:
            s["enum"] = list(range(n))
        return s

    if isinstance(space, Discrete):
        props: dict[str, Any] = {"action": int_range(space.n)}
    elif isinstance(space, MultiDiscrete):
        k = len(space.nvec)
        arr: dict[str, Any] = {"type": "array", "minItems": k, "maxItems": k}
        if len(set(space.nvec)) == 1:
            arr["items"] = int_range(space.nvec[0])
        else:
            arr["prefixItems"] = [int_range(n) for n in space.nvec]
        props = {"goals": arr}
    elif isinstance(space, Box):
        item: dict[str, Any] = {"type": "number"}
        if math.isfinite(space.low):
            item["minimum"] = space.low
        if math.isfinite(space.high):
            item["maximum"] = space.high
        d = space.flat_dim
        props = {"action": {"type": "array", "items": item, "minItems": d, "maxItems": d}}
    else:  # pragma: no cover - Space is a closed union
        raise TypeError(f"unsupported action space {space!r}")
    key = next(iter(props))
    return {"type": "object", "properties": props, "required": [key], "additionalProperties": False}


def describe_action_space(space: Space) -> str:
    """One paragraph telling the model what to answer."""
    if isinstance(space, Discrete):
        return f'Reply with JSON only: {{"action": K}} where K is an integer from 0 to {space.n - 1}.'
    if isinstance(space, MultiDiscrete):
        k = len(space.nvec)
        ranges = ", ".join(f"goal {i} in 0..{n - 1}" for i, n in enumerate(space.nvec))
        return (
            f'Reply with JSON only: {{"goals": [...]}}, a list of {k} integers, one goal per child in order '
            f"({ranges})."
        )
    if isinstance(space, Box):
        lo = f"{space.low:g}" if math.isfinite(space.low) else "-inf"
        hi = f"{space.high:g}" if math.isfinite(space.high) else "+inf"
        return f'Reply with JSON only: {{"action": [...]}}, a list of {space.flat_dim} numbers, each in [{lo}, {hi}].'
    raise TypeError(f"unsupported action space {space!r}")  # pragma: no cover


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        raise BadReply(f"expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise BadReply(f"expected an integer, got {v!r}")


def parse_action(content: str, space: Space, clip_box: bool = True) -> np.ndarray:
    """Validate a reply's text into one action of ``space`` (unbatched); raises BadReply."""
    obj = _load_json_object(content)
    if isinstance(space, Discrete):
        if "action" not in obj:
            raise BadReply(f"reply lacks the key 'action': {content[:200]!r}")
        a = _as_int(obj["action"])
        if not 0 <= a < space.n:
            raise BadReply(f"action {a} out of range 0..{space.n - 1}")
        return np.asarray(a, dtype=np.int64)
    if isinstance(space, MultiDiscrete):
        if "goals" not in obj:
            raise BadReply(f"reply lacks the key 'goals': {content[:200]!r}")
        goals = obj["goals"]
        if not isinstance(goals, list) or len(goals) != len(space.nvec):
            raise BadReply(f"'goals' must be a list of {len(space.nvec)} integers, got {goals!r}")
        out = np.empty(len(space.nvec), dtype=np.int64)
        for i, (g, n) in enumerate(zip(goals, space.nvec, strict=True)):
            out[i] = gi = _as_int(g)
            if not 0 <= gi < n:
                raise BadReply(f"goal {i} = {gi} out of range 0..{n - 1}")
        return out
    if isinstance(space, Box):
        if "action" not in obj:
            raise BadReply(f"reply lacks the key 'action': {content[:200]!r}")
        vals = obj["action"]
        if isinstance(vals, int | float) and not isinstance(vals, bool) and space.flat_dim == 1:
            vals = [vals]
        if not isinstance(vals, list) or len(vals) != space.flat_dim:
            raise BadReply(f"'action' must be a list of {space.flat_dim} numbers, got {vals!r}")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in vals):
            raise BadReply(f"'action' must hold numbers only, got {vals!r}")
        x = np.asarray(vals, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise BadReply(f"'action' holds non-finite numbers: {vals!r}")
        if clip_box:
            x = np.clip(x, space.low, space.high)
        elif np.any(x < space.low) or np.any(x > space.high):
            raise BadReply(f"'action' {vals!r} outside [{space.low}, {space.high}]")
        return x.astype(np.float32).reshape(space.shape)
    raise TypeError(f"unsupported action space {space!r}")  # pragma: no cover


def _load_json_object(content: str) -> dict[str, Any]:
    """The reply's JSON object; without a schema, models may wrap it in prose or code fences."""
    if not isinstance(content, str):
        raise BadReply(f"reply content is not text: {content!r}")
    text = content.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        if start < 0:
            raise BadReply(f"reply is not JSON: {content[:200]!r}") from None
        try:
            obj, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            raise BadReply(f"reply is not JSON: {content[:200]!r}") from None
    if not isinstance(obj, dict):
        raise BadReply(f"reply is not a JSON object: {content[:200]!r}")
    return obj


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    s = f"{v:.2f}"
    return "0.00" if s == "-0.00" else s


def format_numbers(values: np.ndarray, number_format: str = "int", scale: float = 10.0, int_max: int = 99) -> str:
    """One block's numbers as prompt text (see the module docstring); NaN is written ``nan``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if number_format == "decimal":
        return "[" + ", ".join(_fmt(float(v)) for v in x) + "]"
    if number_format == "digit":
        d = np.clip(np.rint(x * scale) + 5, 0, 9)
        return "".join("?" if math.isnan(v) else str(int(v)) for v in d)
    q = np.clip(np.rint(x * scale), -int_max, int_max)
    return " ".join("nan" if math.isnan(v) else str(int(v)) for v in q)


# ------------------------------------------------------------------------------------------------------ agent


@dataclass
class _Result:
    outcome: str
    action: np.ndarray | None
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""


class LLMAgent(Agent):
    """Decisions from a language model over HTTP; see the module docstring.

    ``stats`` counts calls and their outcomes (``calls``, ``ok``, ``timeout``, ``http_error``,
    ``connection_error``, ``bad_reply``), ``fallbacks`` (env decisions that took the fallback action),
    ``skipped`` (acts inside ``min_interval_s`` that made no call), ``latency_s_sum`` and the token counts the
    server reports in ``usage`` (``prompt_tokens``, ``completion_tokens``). ``on_call(outcome, seconds,
    prompt_tokens, completion_tokens)``, when set, is called after every call (from the thread that called
    ``act``); an exception inside it is logged and swallowed.
    """

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        self.cfg = LLMConfig.from_params(ctx.params)
        self.space = ctx.action_space
        self.url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        self.schema = action_schema(self.space)
        self.blocks = self._blocks(ctx)
        self.system_prompt = self._system_prompt()
        self.stats: dict[str, float] = {k: 0 for k in ("calls", *OUTCOMES, "fallbacks", "skipped")}
        self.stats.update(latency_s_sum=0.0, prompt_tokens=0, completion_tokens=0)
        self.on_call: Callable[[str, float, int, int], None] | None = None
        self.last_error = ""
        self._last = self.space.zeros(ctx.num_envs)
        self._cursor = 0
        self._last_call_t = -math.inf
        self._warned: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.schema_style = "json_schema" if self.cfg.schema_style == "auto" else self.cfg.schema_style
        """The schema style in use (``auto`` resolves to one of the two forms at the first answered call)."""
        self._style_settled = self.cfg.schema_style != "auto"

    # ----------------------------------------------------------------------------------------------- prompt

    @staticmethod
    def _blocks(ctx: AgentContext) -> list[tuple[str, int, int]]:
        """(name, start, end) of each observation block; one block 'observation' when no layout fits."""
        out, start = [], 0
        for name, dim in ctx.obs_layout:
            out.append((str(name), start, start + int(dim)))
            start += int(dim)
        if not out or start > ctx.obs_dim:
            return [("observation", 0, ctx.obs_dim)]
        if start < ctx.obs_dim:
            out.append(("rest", start, ctx.obs_dim))
        return out

    def _observation_format(self) -> str:
        blocks = ", ".join(f"{name} ({b - a} numbers)" for name, a, b in self.blocks)
        if self.cfg.number_format == "decimal":
            numbers = "numbers are rounded to 2 decimals"
        elif self.cfg.number_format == "digit":
            numbers = (f"each number is one digit, 5 + the value times {self.cfg.obs_scale:g}, rounded and kept "
                       f"within 0..9 (5 means zero), written without separators; ? means unknown")
        else:
            numbers = (f"every number is the value times {self.cfg.obs_scale:g}, rounded to an integer and capped at "
                       f"+-{self.cfg.int_max}")
        return (f"Each user message is one observation, one line per block: `name: numbers`; {numbers}. "
                f"Blocks in order: {blocks}.")

    def _system_prompt(self) -> str:
        ctx = self.ctx
        task = self.cfg.task.strip()
        if not task:
            scenario = ctx.env_info.get("scenario") or ctx.env_info.get("env") or "the environment"
            task = f"Help your team of agents solve the task {scenario}."
        role = (
            f"You are agent {ctx.name!r} at level {ctx.level} of a hierarchy of agents. "
            + (
                "You control one agent of the environment directly."
                if ctx.level == 1
                else "You instruct the agents below you (your children); they report to you with messages."
            )
        )
        return f"{role}\nTask: {task}\n{self._observation_format()}\n{describe_action_space(self.space)}"

    def render_observation(self, obs_row: np.ndarray) -> str:
        """The user message: one line of numbers per observation block (the only text that changes)."""
        c = self.cfg
        return "\n".join(f"{name}: {format_numbers(obs_row[a:b], c.number_format, c.obs_scale, c.int_max)}"
                         for name, a, b in self.blocks)

    def render_prompt(self, obs_row: np.ndarray) -> list[dict[str, str]]:
        """The chat messages for one env's observation (a 1-D float array): static system text, then numbers."""
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.render_observation(obs_row)}]

    def request_body(self, obs_row: np.ndarray, style: str | None = None) -> dict[str, Any]:
        """The chat-completions request; ``style`` overrides the schema style in use."""
        style = style or self.schema_style
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": self.render_prompt(obs_row),
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        if self.cfg.use_json_schema:
            if style == "json_object":
                body["response_format"] = {"type": "json_object", "schema": self.schema}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "action", "strict": True, "schema": self.schema},
                }
        return body

    # ------------------------------------------------------------------------------------------------- HTTP

    async def _call(self, obs_row: np.ndarray) -> _Result:
        """One chat-completions call (two while ``auto`` probes the schema style); never raises."""
        t0 = time.perf_counter()
        probing = self.cfg.use_json_schema and not self._style_settled
        style = self.schema_style
        r = await self._post(obs_row, style, t0)
        if probing and style == "json_schema" and r.outcome == "http_error" and not self._style_settled:
            r2 = await self._post(obs_row, "json_object", t0)
            if r2.outcome != "http_error":
                if not self._style_settled:
                    log.info("agent %s: the server rejected response_format type json_schema (%s); using its "
                             "json_object + schema form from now on", self.ctx.name, r.error)
                self.schema_style, self._style_settled = "json_object", True
            return r2
        if probing and r.outcome in ("ok", "bad_reply"):
            self._style_settled = True
        return r

    async def _post(self, obs_row: np.ndarray, style: str, t0: float) -> _Result:
        try:
            headers: dict[str, str] = {}
            key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
            if key:
                headers["Authorization"] = f"Bearer {key}"
            raw = await llm_http.post_json(self.url, self.request_body(obs_row, style), headers, self.cfg.timeout_s)
        except llm_http.HTTPStatusError as e:
            return _Result("http_error", None, time.perf_counter() - t0, error=str(e))
        except TimeoutError:
            return _Result("timeout", None, time.perf_counter() - t0,
                           error=f"no answer within timeout_s = {self.cfg.timeout_s:g} s")
        except OSError as e:  # refused, reset, closed mid-way, not HTTP
            return _Result("connection_error", None, time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - the agent never raises on server problems
            return _Result("http_error", None, time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
        seconds = time.perf_counter() - t0
        pt = ct = 0
        try:
            reply = json.loads(raw)
            usage = reply.get("usage") or {}
            pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            content = reply["choices"][0]["message"]["content"]
            action = parse_action(content, self.space, self.cfg.clip_box)
        except BadReply as e:
            return _Result("bad_reply", None, seconds, pt, ct, error=str(e))
        except Exception as e:  # noqa: BLE001 - malformed envelope (not JSON, no choices, ...)
            return _Result("bad_reply", None, seconds, pt, ct, error=f"malformed response {type(e).__name__}: {e}")
        return _Result("ok", action, seconds, pt, ct)

    async def _call_all(self, obs_rows: list[np.ndarray]) -> list[_Result]:
        """One call per row, at most ``concurrency`` in flight; results in the order of the rows."""
        if len(obs_rows) == 1 or self.cfg.concurrency == 1:
            return [await self._call(row) for row in obs_rows]
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def gated(row: np.ndarray) -> _Result:
            async with gate:
                return await self._call(row)

        return list(await asyncio.gather(*(gated(row) for row in obs_rows)))

    def call_many(self, obs_rows: list[np.ndarray]) -> list[_Result]:
        """Run ``_call_all`` to completion on the agent's uvloop event loop (made at the first call)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = uvloop.new_event_loop()
        return self._loop.run_until_complete(self._call_all(obs_rows))

    def _record(self, r: _Result) -> None:
        s = self.stats
        s["calls"] += 1
        s[r.outcome] += 1
        s["latency_s_sum"] += r.seconds
        s["prompt_tokens"] += r.prompt_tokens
        s["completion_tokens"] += r.completion_tokens
        if r.outcome != "ok":
            self.last_error = r.error
            level = logging.DEBUG if r.outcome in self._warned else logging.WARNING
            self._warned.add(r.outcome)
            log.log(level, "agent %s: LLM call %s (%s); using fallback %r", self.ctx.name, r.outcome, r.error,
                    self.cfg.fallback)
        if self.on_call is not None:
            try:
                self.on_call(r.outcome, r.seconds, r.prompt_tokens, r.completion_tokens)
            except Exception:  # noqa: BLE001
                log.exception("agent %s: on_call hook failed", self.ctx.name)

    def _fallback(self, rows: np.ndarray) -> np.ndarray:
        n = len(rows)
        self.stats["fallbacks"] += n
        if self.cfg.fallback == "zeros":
            return self.space.zeros(n)
        if self.cfg.fallback == "random":
            return self.space.sample(self.rng, n)
        return self._last[rows].copy()

    # -------------------------------------------------------------------------------------------------- act

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        batch = obs.shape[0]
        if self._last.shape[0] != batch:
            self._last = self.space.zeros(batch)
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        if rows.size == 0:
            return self._last.copy()
        now = time.monotonic()
        if now - self._last_call_t < self.cfg.min_interval_s:
            self.stats["skipped"] += 1
            return self._last.copy()
        self._last_call_t = now

        if self.cfg.batch_mode == "shared":
            (r,) = self.call_many([obs[rows[0]]])
            self._record(r)
            if r.action is not None:
                self._last[rows] = r.action
            else:
                self._last[rows] = self._fallback(rows)
            return self._last.copy()

        # subset: the next envs_per_call masked envs at or after the cursor (round robin); the others hold
        order = np.concatenate([rows[rows >= self._cursor], rows[rows < self._cursor]])
        chosen = order[: self.cfg.envs_per_call]
        self._cursor = int(chosen[-1]) + 1
        if self._cursor >= batch:
            self._cursor = 0
        results = self.call_many([obs[i] for i in chosen])
        for i, r in zip(chosen, results, strict=True):
            self._record(r)
            self._last[i] = r.action if r.action is not None else self._fallback(np.array([i]))[0]
        return self._last.copy()

    # -------------------------------------------------------------------------------------------- lifecycle

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "last_action": self._last.tolist(),  # plain values: loads with weights_only=True
            "cursor": self._cursor,
            "schema_style": self.schema_style if self._style_settled else "",
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "last_action" in state:
            self._last = np.asarray(state["last_action"]).astype(self._last.dtype, copy=True)
        self._cursor = int(state.get("cursor", 0))
        if state.get("schema_style") and self.cfg.schema_style == "auto":
            self.schema_style, self._style_settled = str(state["schema_style"]), True
        self.stats.update(state.get("stats", {}))

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None


__all__ = [
    "LLMAgent", "LLMConfig", "OUTCOMES", "action_schema", "describe_action_space", "format_numbers", "parse_action",
]
