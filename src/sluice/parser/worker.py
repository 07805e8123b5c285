"""The parser's consumer: raw messages in, bulk requests out, acks last.

Flow per process::

    quorum queue <ns>.raw.<kind>  --(prefetch, manual acks)-->  decode + parse (delivery.py)
        --> batch (up to bulk_size documents or bulk_linger_ms)  --> bulk request (indexer.py)
        --> dead letters confirmed (deadletter.py)  --> basic_ack of every message in the batch
        (confirmed dead letters also queued as event documents for ``<prefix>-dead-*``,
        written in the background by deadevents.py)

A message is acked only when each of its records is indexed, known as a duplicate, or
dead-lettered with a confirm. Until then it stays unacked, so if this process dies,
RabbitMQ hands it to another consumer; the ``create`` with the record id as ``_id`` turns
the second attempt into harmless 409s. Prefetch bounds what is in memory: while
Elasticsearch is down the bulks retry and no new messages arrive.

RabbitMQ's prefetch counts messages only (it does not implement a size), so records and
bytes are bounded here. The prefetch count given to RabbitMQ is the smallest of
``prefetch``, ``prefetch_records`` over the average records per message seen, and
``prefetch_bytes`` over the average message size seen (over the largest possible message,
``DEFAULT_MAX_FRAME``, until one is seen); the consumers are re-made when that number
moves by a factor of two. A window in records keeps bulks full whatever the message size:
200 messages are 100,000 records at 500 per message but 1,000 at 5, and a parser that
holds only 1,000 records sends bulks of a few hundred documents and then waits for acks.

And once the bodies held unacked reach ``prefetch_bytes``, or ``concurrency`` sealed bulks
wait for a flusher, the consumers are cancelled; they consume again once the held bytes
are down to half and a flusher is free. Deliveries already on the wire still arrive, at
most one prefetch window, so the bodies held stay within about twice ``prefetch_bytes``,
and the sealed-bulk queue within ``concurrency`` plus what one window fills.

Deliveries arrive on the link's lean consuming connection (``sluice.amqpconsumer``), whose
callback runs in its read loop: ``_on_message`` never awaits. Dead letters are published,
with confirms, on the link's aiormq channel; the two connections go down together.

Acks go on the channel the message came in on, as few ``basic.ack multiple=true`` as the
order of finished bulks allows (acks.py). When that channel is gone, RabbitMQ has already
requeued the message, so the delivery is dropped without an ack.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from collections.abc import Sequence
from typing import Optional

from aiormq.abc import AbstractChannel

from ..amqp import BrokerLink
from ..amqpconsumer import ConsumerChannel, Delivered
from ..errors import BrokerUnavailable, PublishRejected, StoreUnavailable
from ..lifecycle import TaskOwner
from ..logs import RateLimitedLog, get_logger
from ..protocol import DEFAULT_MAX_FRAME
from ..topology import Topology
from .acks import ChannelAcks
from .deadevents import DeadLetterEvents
from .deadletter import DeadLetter, DeadLetterPublisher
from .delivery import Delivery, MessageDecoder
from .indexer import BulkIndexer, BulkOutcome
from .settings import ParserSettings
from .stats import ParserMetrics

__all__ = ["Worker"]

log = get_logger(__name__)

Batch = list[Delivery]


class Worker:
    """Consumes ``settings.kinds`` from ``settings.amqp_url`` within the settings' prefetch
    and bulk bounds; the collaborators decode, index and dead-letter."""

    def __init__(
        self,
        settings: ParserSettings,
        *,
        topology: Topology,
        decoder: MessageDecoder,
        indexer: BulkIndexer,
        dead_letters: DeadLetterPublisher,
        metrics: ParserMetrics,
        events: Optional[DeadLetterEvents] = None,
    ) -> None:
        self._topology = topology
        self._kinds = settings.kinds
        self._decoder = decoder
        self._indexer = indexer
        self._dead = dead_letters
        self._metrics = metrics
        self._events = events
        self._prefetch = settings.prefetch
        self._prefetch_bytes = settings.prefetch_bytes
        self._prefetch_records = settings.prefetch_records
        #: message body bytes received and not yet acked, requeued or dropped
        self.held_bytes = 0
        #: consumers cancelled because held_bytes or the sealed bulks reached their bound
        self.paused = False
        self._flow = asyncio.Event()
        #: prefetch count given to RabbitMQ for the current consumers; average body size
        #: and records per message (0: none seen yet)
        self._qos = 0
        self._avg_body = 0.0
        self._avg_records = 0.0
        self._bulk_size = settings.bulk_size
        self._bulk_max_bytes = settings.bulk_max_bytes
        self._linger = settings.bulk_linger_ms / 1000
        self._concurrency = settings.bulk_concurrency
        self.link = BrokerLink(settings.amqp_url, setup=self._setup, consume=self._setup_consumer,
                               on_lost=self._on_lost, name="parser")
        self._tasks = TaskOwner("parser-worker")
        self._flushers: list[asyncio.Task[None]] = []
        self._sealed: asyncio.Queue[Optional[Batch]] = asyncio.Queue()
        self._batch: Batch = []
        self._batch_docs = 0
        self._batch_bytes = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        #: messages received and not yet decoded, per kind; decoded together, soon
        self._arrived: dict[str, list[Delivered]] = {}
        self._take_soon: Optional[asyncio.Handle] = None
        self._consumers: dict[str, str] = {}  # consumer tag -> kind, on the current channel
        self._acks: dict[ConsumerChannel, ChannelAcks] = {}
        self._consuming = False
        self._accepting = True
        self._rate_limited = RateLimitedLog(log)
        self._flow_task: Optional[asyncio.Task[None]] = None
        self._flow_stopping = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._consuming = True
        for n in range(self._concurrency):
            self._flushers.append(self._tasks.spawn(self._flush_loop(), name=f"bulk-{n}"))
        self._flow_task = self._tasks.spawn(self._flow_loop(), name="flow")
        self.link.start()

    @property
    def sealed_waiting(self) -> int:
        """Sealed bulks waiting for a flusher."""
        return self._sealed.qsize()

    async def stop(self, drain_timeout: float = 20.0) -> bool:
        """Stop consuming, finish the bulks in flight and ack them, close the link.

        Returns False when the drain timed out; what was not acked then goes back to the
        queue when the channel closes.
        """
        self._consuming = False
        await self._stop_flow(drain_timeout)
        # Deliveries the broker sent before its cancel-ok were handed over as they were
        # read, before the answer: none is left behind once the cancels are answered.
        await self._cancel_consumers(drain_timeout)
        self._accepting = False
        self._seal()
        for _ in self._flushers:
            self._sealed.put_nowait(None)
        drained = True
        if self._flushers:
            _, pending = await asyncio.wait(self._flushers, timeout=drain_timeout)
            drained = not pending
        if not drained:
            log.warning("drain_timed_out", timeout=drain_timeout,
                        note="unacked messages return to the queue")
        await self.close()
        return drained

    async def _stop_flow(self, timeout: float) -> None:
        """End the flow loop between two steps. Cancelled in the middle of one, an RPC
        such as ``basic.qos`` closes the consuming connection, and every delivery indexed
        but not yet acked would come back to the queue to be indexed again."""
        task = self._flow_task
        if task is None:
            return
        self._flow_stopping = True
        self._flow.set()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:  # a broker that never answers must not hold the shutdown
            task.cancel()
            await asyncio.wait({task})

    async def close(self) -> None:
        """Cancel everything and close the link; unacked messages return to the queue."""
        self._accepting = False
        for handle in (self._timer, self._take_soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._take_soon = None
        self._arrived = {}  # never acked: back to the queue with the channel
        await self._tasks.close()
        await self.link.close()

    async def _cancel_consumers(self, timeout: float) -> None:
        """``basic_cancel`` every consumer, waiting at most ``timeout`` seconds in all: a
        broker that never answers must not hold the shutdown (closing the channel later
        cancels the consumers anyway)."""
        if not self.link.is_up:
            return
        try:
            channel = self.link.consumer_channel
            tags = list(self._consumers)
            await asyncio.wait_for(self._cancel_each(channel, tags), timeout)
        except asyncio.TimeoutError:
            log.warning("cancel_consumers_timed_out", timeout=timeout)
        except (BrokerUnavailable, ConnectionError) as exc:
            log.info("cancel_consumers_failed", error=repr(exc))
        self._consumers.clear()

    @staticmethod
    async def _cancel_each(channel: ConsumerChannel, tags: Sequence[str]) -> None:
        for tag in tags:
            await channel.basic_cancel(tag)

    async def _setup(self, channel: AbstractChannel) -> None:
        await self._topology.declare(channel, self._kinds)

    async def _setup_consumer(self, channel: ConsumerChannel) -> None:
        # Deliveries of a closed channel are back in the queue: nothing left to ack there.
        self._acks = {ch: acks for ch, acks in self._acks.items() if not ch.is_closed}
        self._acks[channel] = ChannelAcks()
        self._consumers = {}
        self._metrics.broker_up.set(1)
        if self._consuming and not self.paused:
            await self._consume(channel)

    def _wanted_qos(self) -> int:
        size = self._avg_body or DEFAULT_MAX_FRAME
        wanted = min(self._prefetch, int(self._prefetch_bytes // size))
        if self._avg_records:
            wanted = min(wanted, int(self._prefetch_records // self._avg_records))
        return max(1, wanted)

    def _qos_fits(self) -> bool:
        return self._qos // 2 < self._wanted_qos() < self._qos * 2

    async def _consume(self, channel: ConsumerChannel) -> None:
        self._qos = self._wanted_qos()
        await channel.basic_qos(prefetch_count=self._qos)
        for kind in self._kinds:
            tag = await channel.basic_consume(
                self._topology.raw_queue(kind), functools.partial(self._on_message, kind),
            )
            self._consumers[tag] = kind
        log.info("consuming", queues=[self._topology.raw_queue(k) for k in self._kinds],
                 prefetch=self._qos)

    def _on_lost(self, exc: BaseException) -> None:
        # Unacked messages of the lost channel are back in the queue; batched ones are
        # dropped at flush time (their channel is closed).
        self._metrics.broker_up.set(0)
        self._consumers.clear()

    # -- receiving and batching ----------------------------------------------------------

    def _on_message(self, kind: str, message: Delivered) -> None:
        if not self._accepting:
            return  # never acked: back to the queue when the channel closes
        # Registered now, in arrival order: an ack with multiple must not pass a tag.
        self._channel_acks(message.channel).received(message.delivery_tag)
        self._metrics.inflight_messages += 1
        self.held_bytes += len(message.body)
        if not self._arrived:
            # Called in the read loop of the consuming connection: everything one read
            # from the socket holds is in before this runs, and is decoded together.
            self._take_soon = asyncio.get_running_loop().call_soon(self._take_arrived)
        self._arrived.setdefault(kind, []).append(message)

    def _take_arrived(self) -> None:
        """Decode the messages that arrived since the last call (``decode_many``: small
        messages are encoded together) and batch them."""
        if self._take_soon is not None:  # called early, from _seal
            self._take_soon.cancel()
            self._take_soon = None
        arrived, self._arrived = self._arrived, {}
        for kind, messages in arrived.items():
            try:
                deliveries = self._decoder.decode_many(kind, messages)
            except Exception as exc:
                # A bug, not bad input (that becomes dead letters): their tags are already
                # registered, so unanswered they would hold every later ack back.
                log.exception("decode_failed", kind=kind, messages=len(messages), error=repr(exc))
                self._give_back([Delivery(kind, m.channel, m.delivery_tag, m.message_id, m.body)
                                 for m in messages])
                continue
            for delivery in deliveries:
                self._batch_one(delivery)

    def _give_back(self, deliveries: list[Delivery]) -> None:
        """Requeue deliveries that will never reach a bulk, in the background."""
        self._release(deliveries)
        self._tasks.spawn(self._requeue(deliveries), name="requeue")

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        """Deliveries no longer held here: answered, or about to be."""
        self._metrics.inflight_messages -= len(deliveries)
        self.held_bytes -= sum(len(d.body) for d in deliveries)

    def _batch_one(self, delivery: Delivery) -> None:
        self._metrics.received(delivery.kind, delivery.count)
        size = len(delivery.body)
        if self._avg_body:
            self._avg_body = 0.9 * self._avg_body + 0.1 * size
            self._avg_records = 0.9 * self._avg_records + 0.1 * delivery.count
        else:
            self._avg_body, self._avg_records = size, max(1, delivery.count)
        if not self._batch:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._seal)
        self._batch.append(delivery)
        self._batch_docs += len(delivery.actions)
        self._batch_bytes += sum(map(len, delivery.actions))
        # Half the prefetch window also seals: the broker sends nothing past the window
        # until acks come back, so a bulk waiting out the linger with half of it would
        # leave the parser idle (small messages were held to one bulk per linger).
        if self._batch_docs >= self._bulk_size or self._batch_bytes >= self._bulk_max_bytes \
                or len(self._batch) * 2 >= self._qos:
            self._seal()
        else:
            self._check_flow()

    def _channel_acks(self, channel: ConsumerChannel) -> ChannelAcks:
        acks = self._acks.get(channel)
        if acks is None:  # a delivery from before a reconnect's setup ran
            acks = self._acks[channel] = ChannelAcks()
        return acks

    def _seal(self) -> None:
        if self._arrived:
            self._take_arrived()  # the last ones in belong to this bulk
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            self._sealed.put_nowait(self._batch)
            self._batch, self._batch_docs, self._batch_bytes = [], 0, 0
        self._check_flow()

    # -- flow control --------------------------------------------------------------------

    def _check_flow(self) -> None:
        full = (self.held_bytes >= self._prefetch_bytes
                or self._sealed.qsize() >= self._concurrency)
        if full and not self.paused:
            self.paused = True
            self._flow.set()
        elif self.paused and not full and self.held_bytes <= self._prefetch_bytes // 2:
            self.paused = False
            self._flow.set()
        elif not self.paused and self._consumers and not self._qos_fits():
            self._flow.set()  # re-made with a prefetch count that fits the message size

    async def _flow_loop(self) -> None:
        """Cancel the consumers while paused, consume again when not: one task does both,
        so a pause and a resume never race on the channel."""
        while True:
            await self._flow.wait()
            self._flow.clear()
            if self._flow_stopping:
                return
            if not self.link.is_up:
                continue  # the next setup consumes or not, from self.paused
            try:
                channel = self.link.consumer_channel
                if self.paused and self._consumers:
                    log.info("consumers_paused", held_bytes=self.held_bytes,
                             sealed=self._sealed.qsize())
                    await self._cancel_each(channel, list(self._consumers))
                    self._consumers.clear()
                elif not self.paused and self._consuming:
                    if self._consumers and self._qos_fits():
                        continue
                    await self._cancel_each(channel, list(self._consumers))
                    self._consumers.clear()
                    await self._consume(channel)
            except (BrokerUnavailable, ConnectionError) as exc:
                # The link is going down; its setup will consume (or not) on reconnect.
                # This loop must outlive it: if it ended, a pause would never be lifted.
                log.info("flow_change_failed", error=repr(exc))

    # -- flushing ------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            batch = await self._sealed.get()
            if batch is None:
                return
            try:
                await self._flush(batch)
            except Exception as exc:
                # A bug or an answer of a shape nobody expected must not end this flusher
                # (the process would stay "ready" with one bulk lane less, forever): give
                # the batch back to the queue and go on.
                log.exception("bulk_flush_failed", error=repr(exc), messages=len(batch))
                await self._requeue([d for d in batch if not d.channel.is_closed])
            finally:
                self._release(batch)
                self._check_flow()

    async def _flush(self, batch: Batch) -> None:
        live = [d for d in batch if not d.channel.is_closed]
        if not live:
            return
        actions: list[bytes] = []
        starts: list[int] = []
        for delivery in live:
            starts.append(len(actions))
            actions.extend(delivery.actions)
        outcome = BulkOutcome()
        if actions:
            try:
                outcome = await self._indexer.index(actions)
            except StoreUnavailable as exc:
                log.error("bulk_given_up", error=str(exc), messages=len(live))
                await self._requeue(live)
                return
        for refusal in outcome.refused:
            at = bisect.bisect_right(starts, refusal.position) - 1
            delivery = live[at]
            position = delivery.positions[refusal.position - starts[at]]
            record = delivery.record(position)
            delivery.letters.append(
                DeadLetter.for_record(refusal.reason, refusal.error, record, position)
            )
        # Only messages with dead letters wait on the broker one by one; the others are
        # ready at once. Then one ack per channel covers everything that may be acked.
        lettered = [d for d in live if d.letters]
        if lettered:
            await asyncio.gather(*(self._finish(d) for d in lettered))
        for delivery in live:
            if not delivery.letters and not delivery.settled:
                delivery.settled = True
                self._channel_acks(delivery.channel).finished(delivery.tag, delivery.kind)
        for channel in {d.channel for d in live}:
            await self._ack_ready(channel)

    async def _ack_ready(self, channel: ConsumerChannel) -> None:
        """Send the one ack that covers every finished delivery it may on ``channel``."""
        acks = self._channel_acks(channel)
        async with acks.sending:
            if channel.is_closed:
                return  # RabbitMQ has requeued what was not acked
            tag, acked = acks.advance()
            if tag is None:
                return
            try:
                await channel.basic_ack(tag, multiple=True)
            except (BrokerUnavailable, ConnectionError) as exc:
                self._rate_limited.warning("ack", "ack_failed", error=repr(exc))
                return
        for kind, count in acked.items():
            self._metrics.messages_acked.labels(kind).inc(count)

    async def _finish(self, delivery: Delivery) -> None:
        """Dead-letter what was rejected, then mark the delivery ready to ack; or leave
        the message to RabbitMQ."""
        try:
            await self._dead.publish(
                self.link.channel, delivery.kind, delivery.letters, delivery.message_id
            )
        except BrokerUnavailable as exc:
            if delivery.channel.is_closed:
                # RabbitMQ has requeued the message with its channel.
                self._rate_limited.warning("abandon", "delivery_abandoned", error=str(exc))
                return
            # The channel is still open: without an answer the message would hold a
            # prefetch slot for as long as the channel lives.
            self._rate_limited.warning("dl_failed", "dead_letter_failed", error=str(exc))
            await self._requeue([delivery])
            return
        except PublishRejected as exc:
            # Nack with requeue: the queue's delivery limit dead-letters the whole message
            # if this keeps happening; its indexed records come back as duplicates.
            self._rate_limited.warning("dl_rejected", "dead_letter_rejected", error=str(exc))
            await self._requeue([delivery])
            return
        for letter in delivery.letters:
            self._metrics.dead_lettered.labels(letter.reason).inc()
        if self._events is not None and delivery.letters:
            # Queued for a background bulk: never waited for, never in the way of the ack.
            self._events.record(delivery.kind, delivery.message_id, delivery.letters)
        if delivery.settled:
            return
        delivery.settled = True
        self._channel_acks(delivery.channel).finished(delivery.tag, delivery.kind)

    async def _requeue(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.settled:
                continue
            delivery.settled = True
            try:
                await delivery.channel.basic_nack(delivery.tag, requeue=True)
            except (BrokerUnavailable, ConnectionError):
                continue
            finally:
                # Answered on its own (or its channel is gone): it holds no ack back.
                self._channel_acks(delivery.channel).finished(delivery.tag, None)
            self._metrics.messages_requeued.inc()
        for channel in {d.channel for d in deliveries}:
            await self._ack_ready(channel)
