"""The two tick loops of a process: the env's (``EnvActor``: step the env, send UP to each level-1 agent, wait for
their DOWN) and an agent's (``AgentActor``: read its children's UPs, report up, take the parent's instruction,
decide, send DOWN), on top of ``tag_actors.actor.Actor`` (handshakes, restarts, the process around them). The
loop of an agent is one lockstep tick (PROTOCOL.md §9.2):

    children's UP ─▶ node.on_children ─▶ UP to parent ─▶ parent's DOWN ─▶ node.on_instruction ─▶ DOWN to children
"""

from __future__ import annotations

import time
from typing import Any

from tag_actors import config as config_mod
from tag_actors import protocol
from tag_actors.actor import Actor, closing, log
from tag_actors.agents import agent_class
from tag_actors.mailbox import Inbox, Outbox, placeholder_up, report_of, up_message
from tag_actors.node import AgentNode
from tag_actors.protocol import Hello, Kind, Message
from tag_actors.transport import ChildLink, Link, ParentLink


class EnvActor(Actor):
    def run(self) -> str:
        from tag_actors.envs import make_env
        from tag_actors.level_env import EnvLevel
        from tag_actors.recorder import EnvRecorder

        cfg = self.cfg
        env = make_env(cfg.env.kind, cfg.env.scenario, cfg.env.num_envs, cfg.run.seed, dict(cfg.env.kwargs),
                       device=cfg.env.device)
        level = EnvLevel(env, cfg.env.max_steps)
        if len(level.names) != cfg.env.n_agents:
            raise config_mod.ConfigError(f"{cfg.source}: env.n_agents = {cfg.env.n_agents} but {cfg.env.kind} "
                                         f"{cfg.env.scenario!r} has {len(level.names)} agents")
        links = {c: self.hub.serve_parent(self.plan.endpoints[c], self.plan.parent[c], me=c) for c in level.names}
        self.welcome_parents([(link, level.message_space(child), level.instruction_space(child),
                               level.info(child)) for child, link in links.items()])
        recorder = EnvRecorder(self.run_dir, level.level0, self.metrics, cfg.run.log_every_s,
                               cfg.run.checkpoint_every_s)
        if self.resume:
            recorder.restore()
        if self.parent_ticks:  # restarted mid-run: the run's clock is the one its parents kept (PROTOCOL.md)
            recorder.continue_clock(max(self.parent_ticks.values()), cfg.env.num_envs)
        if self.restarts:
            recorder.log.write("restarted", restarts=self.restarts, ticks=recorder.ticks)
        self.clock = recorder.ticks
        ordered = list(links.items())
        wait = cfg.level_mode(1) == "lockstep"
        inboxes = {c: Inbox(self.hub, link, wait) for c, link in ordered}
        outboxes = {c: Outbox(self, link) for c, link in ordered}
        self.boxes = {link: (outboxes[c], inboxes[c]) for c, link in ordered}
        if self.restarts:  # rejoined mid-run: neutral actions until each parent's next decision tick (PROTOCOL.md)
            for c, inbox in inboxes.items():
                inbox.latest = level.instruction_space(c).zeros(cfg.env.num_envs)
        self.set_phase("running")
        reason = "interrupted"
        try:
            reports = level.reset(cfg.run.seed + recorder.ticks)  # a resumed run sees new episodes
            tick, stop = recorder.ticks, False  # the run's clock; continues on --resume
            start_tick = tick
            periods = {c: self.plan.node(self.plan.parent[c]).period for c in links}
            while True:
                steps = level.level0.env_steps
                all_ended = bool(level.level0.pending_reset.all())
                fresh = tick == start_tick and not self.restarts  # a restarted env joins its parents' clock
                decides = {c: protocol.waits_for_down(fresh, tick, periods[c], all_ended) for c in links}
                for child, _ in ordered:
                    outboxes[child].put(up_message(reports[child], tick, steps, stop), stop or decides[child])
                if stop:
                    self.set_phase("stopping")
                    for inbox in inboxes.values():
                        inbox.wait_stop()
                    for _, link in ordered:
                        link.established = False
                        link.send(protocol.bye_message())
                    reason = "completed"
                    return reason
                for child, inbox in inboxes.items():
                    inbox.update(decides[child], tick)
                started = time.perf_counter()
                reports = level.step({c: inbox.latest for c, inbox in inboxes.items()})
                if self.metrics:
                    self.metrics.observe_act(time.perf_counter() - started)
                    self.metrics.tick()
                    self.metrics.env_steps(level.level0.env_steps - steps)
                recorder.after_tick()
                tick += 1
                self.clock = tick
                stop = level.level0.env_steps >= cfg.run.total_env_steps or any(
                    i.stopped for i in inboxes.values())
        finally:
            with closing():
                recorder.close(reason)
                env.close()

    def on_rejoined(self, link: Link) -> None:
        outbox, inbox = self.boxes[link]
        outbox.rejoined(inbox)


class AgentActor(Actor):
    def run(self) -> str:
        from tag_actors.recorder import NodeRecorder

        cfg, spec = self.cfg, self.plan.node(self.name)
        # Import the agent's code (torch, for learners) before the handshakes, not after: every process then loads
        # at once, instead of each level waiting for the one below it to load before it starts loading.
        agent_class(spec.agent_type)
        parent = self.plan.parent[self.name]
        parent_link = self.hub.serve_parent(self.plan.endpoints[self.name], parent) if parent else None
        children = [self.hub.connect_child(self.plan.endpoints[c], c) for c in spec.children]
        sends = cfg.instruction_space(spec.level) if spec.level >= 2 else None
        hello = Hello(self.name, "", cfg.env.num_envs, sends, spec.period, cfg.level_mode(spec.level), fp=self.fp)
        welcomes = self.greet_children(children, hello, sends)
        instruction = cfg.instruction_space(spec.level + 1) if parent else None
        node = AgentNode(spec, cfg.env.num_envs, [w.message_space.flat_dim for w in welcomes],
                         [w.instruction_space for w in welcomes], instruction,
                         welcomes[0].info if spec.level == 1 else None)
        if self.metrics:
            from tag_actors.run_metrics import enable_agent_metrics

            enable_agent_metrics(self.metrics, node.agent, parent,
                                 parent is not None and cfg.level_mode(spec.level + 1) == "lockstep")
            if hasattr(node.agent, "on_call"):  # LLM agents report each call's outcome and tokens
                node.agent.on_call = self.metrics.llm_call
        if parent_link:
            self.welcome_parents([(parent_link, node.message_space, instruction, {})])
        recorder = NodeRecorder(self.run_dir, node, self.metrics, cfg.run.checkpoint_every_s)
        if self.resume:
            recorder.restore()
        if self.restarts:  # restarted mid-run: the episodes in flight began before this process (cut, PROTOCOL.md)
            node.cut[:] = True
            recorder.log.write("restarted", restarts=self.restarts, ticks=node.ticks)
        self.clock = node.ticks
        self.set_phase("running")
        reason = "interrupted"
        try:
            reason = self.loop(node, children, parent_link, recorder)
            return reason
        finally:
            with closing():
                recorder.close(reason)
                node.agent.close()

    def on_rejoined(self, link: Link) -> None:
        if isinstance(link, ParentLink):
            self.outbox.rejoined(self.inbox)
        else:
            self.rejoined.add(link)
            self.early.pop(link, None)

    def read_children(self, children: list[ChildLink], tick: int,
                      node: AgentNode) -> tuple[list[Message], bool]:
        """The UP of every child for ``tick``: (messages in child order, whether a placeholder stood in for a
        child). A restarted child resumes at the tick its own children are at, which may be ahead of this clock:
        its UP waits here until this node reaches that tick, and placeholders stand in for it meanwhile
        (PROTOCOL.md "Restarts")."""
        while True:
            need = [link for link in children if link not in self.early]
            first_ups = [link for link in need if link in self.rejoined]
            if first_ups or need:  # a rejoined child's first UP first: it may be for a tick already done here
                self.early.update(self.hub.recv_from_all(first_ups or need, (Kind.UP,), None, "UP",
                                                         partial_on_rejoin=True))
            behind = [link for link in children if link in self.rejoined and link in self.early
                      and self.early[link].tick < tick]
            for link in behind:
                # the child died waiting for the DOWN of a tick this node has done (its UP of that tick came
                # before): that DOWN again, and the UP dropped (it is in this node's books already)
                msg = self.early.pop(link)
                log.info("rejoined %r resumes at tick %d, %r is at tick %d: sending it that tick's DOWN again",
                         link.peer, msg.tick, self.name, tick)
                self.send(link, protocol.down_message(node.split(node.held)[children.index(link)], msg.tick, None))
            if not behind and all(link in self.early for link in children):
                break
        msgs: list[Message | None] = []
        for link in children:
            msg = self.early[link]
            if link in self.rejoined:
                if msg.tick > tick:
                    msgs.append(None)
                    continue
                self.rejoined.discard(link)
            del self.early[link]
            msgs.append(msg)
        real = next((m for m in msgs if m is not None), None)
        filled = real is None or any(m is None for m in msgs)
        out = [m if m is not None else placeholder_up(link, tick, real) for m, link in zip(msgs, children,
                                                                                          strict=True)]
        return out, filled

    def loop(self, node: AgentNode, children: list[ChildLink], parent_link: ParentLink | None,
             recorder: Any) -> str:
        hub, metrics, cfg = self.hub, self.metrics, self.cfg
        level = node.spec.level
        parent_period = self.plan.node(parent_link.peer).period if parent_link else 0
        inbox = Inbox(hub, parent_link, cfg.level_mode(level + 1) == "lockstep") if parent_link else None
        outbox = Outbox(self, parent_link) if parent_link else None
        self.inbox, self.outbox = inbox, outbox
        if inbox is not None and self.restarts:  # rejoined mid-run: a neutral instruction until the parent's next
            inbox.latest = node.instruction_space.zeros(cfg.env.num_envs)  # decision tick (PROTOCOL.md)
        self.rejoined: set[ChildLink] = set()
        self.early: dict[ChildLink, Message] = {}
        children_wait = cfg.level_mode(level) == "lockstep"
        staleness = [0.0, 0.0, 0]  # sum of ticks, sum of seconds, count
        backlog = 0
        first = True
        while True:
            tick = self.clock = node.ticks  # the run's clock (continues on --resume); on_instruction advances it
            if first:  # this process's first tick takes the clock from its children, whoever rejoined meanwhile
                self.rejoined.clear()
            msgs, filled = self.read_children(children, tick, node)
            if filled:  # ticks of a restarted child's subtree that nobody lived: this node's episodes are cut
                node.cut[:] = True
            if first:
                first = False
                if msgs[0].tick != tick:  # resumed from a checkpoint older (or newer) than its children's
                    log.warning("checkpoint at tick %d, children at tick %d: taking the run's clock from them",
                                tick, msgs[0].tick)
                    recorder.log.write("clock", checkpoint_tick=tick, run_tick=msgs[0].tick)
                    node.ticks = tick = self.clock = msgs[0].tick
            env_steps = msgs[0].meta.get("e", 0)
            stop = any(m.meta.get("stop") for m in msgs)
            report = node.on_children([report_of(m) for m in msgs])
            parent_decides = inbox is not None and not stop and node.decides_at(parent_period,
                                                                                 joined=self.restarts > 0)
            # An async parent's answer is not awaited, so the children get their actions before the reports go
            # up (they are off the critical path). Lockstep, a stop, or the first instruction: reports first.
            report_late = inbox is not None and not (inbox.wait or stop or inbox.latest is None)
            if inbox is not None:
                sent = time.perf_counter()
                outbox.put(up_message(report, tick, env_steps, stop), (stop or parent_decides) and not report_late)
                if not stop:
                    inbox.update(parent_decides, tick)
                    if metrics and inbox.wait and parent_decides:
                        metrics.observe_roundtrip(parent_link.peer, time.perf_counter() - sent)
                    stop = inbox.stopped
            if stop:
                self.set_phase("stopping")
                recorder.after_tick(env_steps)
                recorder.checkpoint()
                self.stop_children(children)
                if inbox is not None:
                    inbox.wait_stop()
                    parent_link.established = False
                    parent_link.send(protocol.bye_message())
                recorder.log.write("staleness", ticks_mean=staleness[0] / max(staleness[2], 1),
                                   seconds_mean=staleness[1] / max(staleness[2], 1), decisions=staleness[2])
                return "completed"
            # async: when every child is already a tick ahead, keep the books and decide later on fresher news
            behind = not children_wait and all(hub.pending(link) for link in children)
            backlog = backlog + 1 if behind else 0
            actions = node.on_instruction(inbox.latest if inbox else None, allow_decision=not behind)
            if node.decided:  # otherwise the children keep what they hold without asking (§9.1)
                now = time.time()
                for link, action in zip(children, actions, strict=True):
                    if link in self.rejoined:  # a placeholder stood in: that child did not live this tick
                        continue
                    self.send(link, protocol.down_message(action, tick, now if "ts" in link.caps else None))
                if inbox is not None:
                    age_ticks, age_s = tick - inbox.tick, now - inbox.sent_at
                    staleness[0] += age_ticks
                    staleness[1] += age_s
                    staleness[2] += 1
                    if metrics and not inbox.wait:  # async parent: lockstep instructions are never stale
                        metrics.staleness(age_ticks, age_s)
            if report_late and parent_decides:
                outbox.flush()
            node.maybe_update()
            if metrics:
                metrics.tick()
                metrics.queue_depth("children", backlog)  # ticks this agent is behind its children (async)
                if node.decided:
                    metrics.decision(node.last_act_seconds)
            recorder.after_tick(env_steps)
