"""The sandbox's state and Meta's behaviour: windows, sends, statuses, webhooks."""

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

import aiohttp

from . import identity, inbound, payloads
from .config import Number, SandboxConfig
from .errors import GraphError
from .faults import Faults
from .media import MediaStore
from .state import StateFile
from .templates import TemplateStore, check_template_send, render_template

logger = logging.getLogger("sandbox")

SERVICE_WINDOW = 24 * 3600
FREE_ENTRY_POINT_WINDOW = 72 * 3600
# Meta retries failed webhook deliveries with growing gaps.
WEBHOOK_RETRY_DELAYS = (1.0, 5.0, 30.0)
WEBHOOK_TIMEOUT = 10.0
EVENT_LIMIT = 10_000
PER_SECOND_KEPT = 600
# The sample click-to-WhatsApp ad's picture, in sandbox/static/.
AD_IMAGE = "ad-spring-sale.svg"


@dataclass
class Customer:
    wa_id: str
    name: str
    user_id: str = ""
    username: str = ""
    # A username customer whose phone Meta does not show the business.
    phone_hidden: bool = False
    # Per phone_number_id: when the customer last wrote (opens the window).
    last_inbound_at: dict[str, float] = field(default_factory=dict)
    # Per phone_number_id: when the customer arrived from an ad, and when the
    # business's first reply opened the 72-hour free entry point.
    referral_at: dict[str, float] = field(default_factory=dict)
    free_entry_point_at: dict[str, float] = field(default_factory=dict)

    def window_open(self, phone_number_id: str, at: float) -> bool:
        opened = self.last_inbound_at.get(phone_number_id)
        return opened is not None and at - opened < SERVICE_WINDOW

    def public_dict(self) -> dict:
        return {
            "wa_id": self.wa_id,
            "name": self.name,
            "user_id": self.user_id,
            "username": self.username,
            "phone_hidden": self.phone_hidden,
            "last_inbound_at": self.last_inbound_at,
            "referral_at": self.referral_at,
            "free_entry_point_at": self.free_entry_point_at,
        }


@dataclass
class OutboundMessage:
    """A send the sandbox accepted, with the statuses it reported so far."""

    wamid: str
    number: Number
    to: str
    wa_id: str
    type: str
    body: dict
    accepted_at: float
    pricing: dict
    conversation: dict | None = None
    template: dict | None = None
    statuses: list[str] = field(default_factory=list)

    def public_dict(self) -> dict:
        return {
            "wamid": self.wamid,
            "phone_number_id": self.number.phone_number_id,
            "to": self.to,
            "wa_id": self.wa_id,
            "type": self.type,
            "body": self.body,
            "accepted_at": self.accepted_at,
            "pricing": self.pricing,
            "template": self.template,
            "statuses": self.statuses,
        }


class NumberStats:
    def __init__(self):
        self.sends = 0
        self.rejected_by_throughput = 0
        self.errors_by_code: collections.Counter = collections.Counter()
        self.per_second: dict[int, int] = {}
        self.max_per_second = 0

    def count_send(self, second: int):
        self.sends += 1
        count = self.per_second.get(second, 0) + 1
        self.per_second[second] = count
        self.max_per_second = max(self.max_per_second, count)
        if len(self.per_second) > PER_SECOND_KEPT:
            del self.per_second[min(self.per_second)]

    def public_dict(self) -> dict:
        return {
            "sends": self.sends,
            "max_per_second": self.max_per_second,
            "rejected_by_throughput": self.rejected_by_throughput,
            "errors_by_code": {str(code): n for code, n in self.errors_by_code.items()},
            "per_second": {
                str(second): n for second, n in sorted(self.per_second.items())
            },
        }


class Sandbox:
    """Everything Meta would know, in memory, plus what the sandbox recorded."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.numbers: dict[str, Number] = {}
        for number in config.numbers:
            self.add_number(number)
        self.templates = TemplateStore()
        self.media = MediaStore()
        self.faults = Faults.from_dict(config.faults)
        self.base_url = ""
        self.session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task] = set()
        self._pending_changes: list[tuple[Number, str, dict]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._new_event = asyncio.Event()
        self._clear_records()
        self.state = StateFile(config.state_file) if config.state_file else None
        if self.state is not None and self.state.load_into(self):
            logger.info("state restored from %s", self.state.path)

    def _clear_records(self):
        self.customers: dict[str, Customer] = {}
        self.outbound: dict[str, OutboundMessage] = {}
        self.inbound: dict[str, tuple[str, str]] = {}
        # Customer messages their sender deleted (a revoke): no longer changeable.
        self.revoked: set[str] = set()
        self.requests: collections.deque = collections.deque(
            maxlen=self.config.record_limit
        )
        self.webhooks: collections.deque = collections.deque(
            maxlen=self.config.record_limit
        )
        self.events: collections.deque = collections.deque(maxlen=EVENT_LIMIT)
        self.stats: dict[str, NumberStats] = collections.defaultdict(NumberStats)
        self.request_count = 0
        self.webhook_count = 0
        self.webhook_statuses: collections.Counter = collections.Counter()
        self.event_seq = 0

    # --- lifecycle ---------------------------------------------------------

    async def start(self, base_url: str):
        self.base_url = base_url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT),
        )

    async def close(self):
        if self._flush_handle:
            self._flush_handle.cancel()
        if self.state is not None:
            self.state.save(self)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.session:
            await self.session.close()

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def reset(self):
        """Forget customers, sends, records and faults; keep the numbers."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._flush_handle:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending_changes.clear()
        self.templates.reset()
        self.media.clear()
        self.faults = Faults.from_dict(self.config.faults)
        self._clear_records()
        self.remember()

    def remember(self):
        """Keep the state on disk (soon), when the sandbox has a state file."""
        if self.state is not None:
            self.state.changed(self)

    # --- numbers and customers ------------------------------------------------

    def add_number(self, number: Number):
        self.numbers[number.phone_number_id] = number

    def default_number(self) -> Number:
        return next(iter(self.numbers.values()))

    def number_for(self, phone_number_id: str | None) -> Number:
        if not phone_number_id:
            if not self.numbers:
                raise KeyError("no number configured")
            return self.default_number()
        return self.numbers[phone_number_id]

    def customer(self, wa_id: str, name: str = "", user_id: str = "") -> Customer:
        customer = self.customers.get(wa_id)
        if customer is None:
            customer = Customer(wa_id, name or f"Customer {wa_id[-4:]}", user_id)
            self.customers[wa_id] = customer
        if name:
            customer.name = name
        if user_id:
            customer.user_id = user_id
        return customer

    def customer_by_user_id(self, user_id: str) -> Customer | None:
        for customer in self.customers.values():
            if customer.user_id == user_id:
                return customer
        return None

    # --- events for the customer phone page -------------------------------------

    def publish(self, kind: str, **data):
        self.event_seq += 1
        self.events.append(
            {"seq": self.event_seq, "kind": kind, "time": time.time(), **data}
        )
        self._new_event.set()
        self._new_event = asyncio.Event()
        self.remember()

    async def events_after(self, after: int, timeout: float) -> list[dict]:
        if self.event_seq <= after:
            waiter = self._new_event
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                return []
        return [event for event in self.events if event["seq"] > after]

    # --- sends --------------------------------------------------------------

    def check_template(self, number: Number, template: dict) -> dict:
        return check_template_send(self.templates, number.waba_id, template)

    def accept_send(
        self, number: Number, body: dict, wa_id: str, stored_template: dict | None
    ) -> OutboundMessage:
        """Record an accepted send and schedule its status webhooks."""
        now = time.time()
        customer = self.customer(wa_id)
        kind = body.get("type", "text")
        window_open = customer.window_open(number.phone_number_id, now)
        failure = None
        if kind != "template" and not window_open:
            # Reached only in window_error_mode "webhook": Meta accepts, then fails.
            failure = GraphError(
                131047,
                "Message failed to send because more than 24 hours have passed "
                "since the customer last replied to this number.",
            )
        failed_code = self.faults.take_failed_status_code()
        if failed_code is not None:
            failure = GraphError(
                failed_code, "The sandbox was told to fail this message."
            )
        media_id = (body.get(kind) or {}).get("id") if kind in MEDIA_KINDS else None
        if media_id and self.media.get(media_id) is None:
            failure = GraphError(131053, f"Media id {media_id} was not found.")
        pricing, conversation = self._pricing(
            number, customer, kind, stored_template, now
        )
        message = OutboundMessage(
            wamid=payloads.new_wamid(wa_id),
            number=number,
            to=body.get("to") or body.get("recipient", ""),
            wa_id=wa_id,
            type=kind,
            body=body,
            accepted_at=now,
            pricing=pricing,
            conversation=conversation,
            template=render_template(stored_template, body["template"])
            if stored_template
            else None,
        )
        self.outbound[message.wamid] = message
        self.publish(
            "business_message",
            phone_number_id=number.phone_number_id,
            wa_id=wa_id,
            message=message.public_dict(),
        )
        self.spawn(self._report_statuses(message, failure))
        return message

    def _pricing(self, number, customer, kind, stored_template, now):
        phone_number_id = number.phone_number_id
        referral_at = customer.referral_at.get(phone_number_id)
        fep_at = customer.free_entry_point_at.get(phone_number_id)
        if (
            fep_at is None
            and referral_at is not None
            and now - referral_at < SERVICE_WINDOW
            and kind != "reaction"
        ):
            # The first reply to a customer from an ad opens the free entry point.
            fep_at = customer.free_entry_point_at[phone_number_id] = now
        if fep_at is not None and now - fep_at < FREE_ENTRY_POINT_WINDOW:
            conversation = {
                "id": f"fep-{phone_number_id}-{customer.wa_id}-{int(fep_at)}",
                "expiration_timestamp": str(int(fep_at + FREE_ENTRY_POINT_WINDOW)),
                "origin": {"type": "referral_conversion"},
            }
            return payloads.pricing(
                "referral_conversion", "free_entry_point"
            ), conversation
        if kind == "template":
            category = stored_template["category"].lower()
            if category == "utility" and customer.window_open(phone_number_id, now):
                return payloads.pricing(category, "free_customer_service"), None
            return payloads.pricing(category, "regular"), None
        return payloads.pricing("service", "free_customer_service"), None

    async def _report_statuses(
        self, message: OutboundMessage, failure: GraphError | None
    ):
        delays = self.config.status_delays
        if failure is not None:
            plan = [("failed", delays.sent or 0.0)]
        else:
            plan = [
                (name, delay)
                for name, delay in (
                    ("sent", delays.sent),
                    ("delivered", delays.delivered),
                    ("read", delays.read),
                )
                if delay is not None
            ]
            # Meta reports only `sent` for the reactions a business sends.
            if message.type == "reaction":
                plan = plan[:1]
        # Pricing rides on `sent` and on one of delivered or read.
        priced = {"sent"} | ({plan[1][0]} if len(plan) > 1 else set())
        if self.faults.webhook_out_of_order:
            await asyncio.sleep(max(delay for _, delay in plan))
            plan = [(name, 0.0) for name, _ in reversed(plan)]
        for name, delay in plan:
            wait = message.accepted_at + delay - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            delivery = self._post_status(message, name, name in priced, failure)
            if delivery is not None:
                # One message's statuses go out one after another, so the
                # order chosen here is the order the receiver sees.
                await delivery

    def _post_status(self, message, name, with_pricing, failure):
        customer = self.customers.get(message.wa_id)
        conversation = None
        if message.conversation and name in {"sent", "delivered", "read"}:
            conversation = dict(message.conversation)
            if name != "sent":
                conversation.pop("expiration_timestamp")
        item = payloads.status(
            wamid=message.wamid,
            status_name=name,
            recipient_id=identity.webhook_wa_id(customer)
            if customer
            else message.wa_id,
            recipient_user_id=customer.user_id if customer else "",
            timestamp=payloads.now(),
            pricing_info=message.pricing if with_pricing and name != "failed" else None,
            conversation=conversation,
            callback_data=message.body.get("biz_opaque_callback_data", ""),
            errors=[failure.webhook_error()] if failure and name == "failed" else None,
        )
        contacts = []
        if customer and customer.user_id and name != "failed":
            contacts = [identity.webhook_contact(customer)]
        message.statuses.append(name)
        self.publish(
            "status",
            phone_number_id=message.number.phone_number_id,
            wa_id=message.wa_id,
            wamid=message.wamid,
            status=name,
        )
        value = payloads.status_value(message.number, [item], contacts)
        return self.queue_change(
            message.number, "messages", value, kind=f"status:{name}"
        )

    # --- inbound customer messages --------------------------------------------

    def build_customer_message(
        self, number: Number, customer: Customer, description: dict
    ):
        """Meta's message object for a customer's description, and its wamid."""
        if description.get("type") in inbound.CHANGE_TYPES:
            self._check_change(number, customer, str(description.get("message_id")))
        wamid = payloads.new_wamid(customer.wa_id)

        def store_media(kind, data, mime_type, filename, media_id):
            media = self.media.get(media_id) if media_id else None
            if media_id and media is None:
                raise inbound.DescriptionError(f"unknown media id {media_id}")
            if media is None:
                media = self.media.add(
                    data, mime_type, number.phone_number_id, filename
                )
            return {
                "id": media.id,
                "mime_type": media.mime_type,
                "sha256": media.sha256_base64,
                "url": self.media.download_url(
                    self.base_url, media.id, self.config.media_url_ttl
                ),
                "filename": media.filename,
            }

        if description.get("referral") is True:
            # The sample ad's picture is the sandbox's own: the demo works
            # offline, with nothing fetched from outside.
            description = {
                **description,
                "referral": {"image_url": f"{self.base_url}/static/{AD_IMAGE}"},
            }
        description = {
            **description,
            "business_display_digits": number.display_digits,
            "customer_name": customer.name,
            "old_wa_id": customer.wa_id,
        }
        message = inbound.build_message(
            description,
            wamid=wamid,
            from_wa_id=identity.webhook_wa_id(customer),
            timestamp=payloads.now(),
            store_media=store_media,
        )
        if customer.user_id:
            message["from_user_id"] = customer.user_id
        return message

    def _check_change(self, number: Number, customer: Customer, original: str):
        """A customer edits or deletes only a message of their own, sent to
        this number, and not deleted already."""
        if self.inbound.get(original) != (number.phone_number_id, customer.wa_id):
            raise inbound.DescriptionError(
                f"{original} is not a message this customer sent to this number"
            )
        if original in self.revoked:
            raise inbound.DescriptionError(f"{original} was deleted already")

    def receive_customer_message(
        self, number: Number, customer: Customer, message: dict
    ):
        """Apply Meta's bookkeeping for an inbound message: window and referral."""
        now = time.time()
        if message.get("type") in inbound.CHANGE_TYPES:
            # A change is not a new message: nothing to answer, no window.
            if message["type"] == "revoke":
                self.revoked.add(message["revoke"]["original_message_id"])
            return
        if message.get("type") == "system":
            new_wa_id = message["system"]["wa_id"]
            self.customers.pop(customer.wa_id, None)
            customer.wa_id = new_wa_id
            customer.user_id = message["system"].get("user_id") or customer.user_id
            self.customers[new_wa_id] = customer
            return
        customer.last_inbound_at[number.phone_number_id] = now
        if "referral" in message:
            customer.referral_at[number.phone_number_id] = now
            customer.free_entry_point_at.pop(number.phone_number_id, None)
        self.inbound[message["id"]] = (number.phone_number_id, customer.wa_id)

    def receive_history(self, number: Number, customer: Customer, past: list[dict]):
        """Past messages shared from the business app: the customer's become
        messages Meta knows (no window opens: they are old); the phone page
        shows the chat."""
        for message in past:
            if "to" not in message:
                self.inbound[message["id"]] = (number.phone_number_id, customer.wa_id)
        self.publish(
            "history",
            phone_number_id=number.phone_number_id,
            wa_id=customer.wa_id,
            name=customer.name,
            messages=past,
        )

    def customer_value(self, number: Number, customer: Customer, messages: list[dict]):
        system_only = all(message.get("type") == "system" for message in messages)
        contacts = [] if system_only else [identity.webhook_contact(customer)]
        return payloads.inbound_value(number, contacts, messages)

    # --- webhook delivery ---------------------------------------------------

    def queue_change(
        self, number: Number, field_name: str, value: dict, kind: str
    ) -> asyncio.Task | None:
        """Post one change now (returning its task), or add it to the batch."""
        if self.faults.webhook_batch_ms <= 0:
            payload = payloads.envelope([(number, field_name, value)])
            return self.spawn(self.post_webhook(number, payload, kind))
        self._pending_changes.append((number, field_name, value))
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(
                self.faults.webhook_batch_ms / 1000, self._flush_batch
            )
        return None

    def _flush_batch(self):
        self._flush_handle = None
        changes, self._pending_changes = self._pending_changes, []
        by_webhook_url: dict[str, list] = collections.defaultdict(list)
        for change in changes:
            by_webhook_url[self.webhook_url_for(change[0])].append(change)
        for grouped in by_webhook_url.values():
            payload = payloads.envelope(merge_changes(grouped))
            self.spawn(self.post_webhook(grouped[0][0], payload, "batch"))

    def webhook_url_for(self, number: Number) -> str:
        return number.webhook_url or self.config.webhook_url

    async def post_webhook(
        self, number: Number, payload: dict, kind: str
    ) -> int | None:
        """Sign and post a webhook; retry in the background as Meta does.

        Returns the HTTP status of the first attempt (None if it failed).
        """
        body = payloads.serialise(payload)
        status = await self._deliver(number, body, payload, kind, attempt=1)
        if self.faults.chance(self.faults.webhook_duplicate_rate):
            self.spawn(
                self._deliver(number, body, payload, kind, attempt=1, duplicate=True)
            )
        if status != 200 and self.webhook_url_for(number):
            self.spawn(self._retry(number, body, payload, kind))
        return status

    async def _retry(self, number, body, payload, kind):
        for attempt, delay in enumerate(WEBHOOK_RETRY_DELAYS, start=2):
            await asyncio.sleep(delay)
            if await self._deliver(number, body, payload, kind, attempt) == 200:
                return

    async def _deliver(self, number, body, payload, kind, attempt, duplicate=False):
        url = self.webhook_url_for(number)
        record = {
            "seq": self.webhook_count + 1,
            "time": time.time(),
            "kind": kind,
            "url": url,
            "attempt": attempt,
            "duplicate": duplicate,
            "payload": payload,
            "status": None,
            "error": "",
        }
        self.webhook_count += 1
        self.webhooks.append(record)
        if not url:
            record["error"] = "no webhook URL configured"
            return None
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": payloads.sign(body, number.app_secret),
            "User-Agent": "facebookexternalua",
        }
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                await response.read()
                record["status"] = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            record["error"] = f"{type(error).__name__}: {error}"
            logger.warning("webhook to %s failed: %s", url, record["error"])
        self.webhook_statuses[str(record["status"])] += 1
        return record["status"]

    # --- reports -------------------------------------------------------------

    def stats_dict(self) -> dict:
        return {
            "numbers": {
                pnid: stats.public_dict() for pnid, stats in self.stats.items()
            },
            "total_sends": sum(stats.sends for stats in self.stats.values()),
            "requests": self.request_count,
            "webhooks": {
                "posted": self.webhook_count,
                "by_status": dict(self.webhook_statuses),
            },
        }


MEDIA_KINDS = {"image", "audio", "video", "document", "sticker"}


def merge_changes(
    changes: list[tuple[Number, str, dict]],
) -> list[tuple[Number, str, dict]]:
    """Merge `messages` changes of one number into one value, as Meta batches."""
    merged: dict[tuple[str, str], tuple[Number, str, dict]] = {}
    result = []
    for number, field_name, value in changes:
        key = (number.phone_number_id, field_name)
        if field_name != "messages":
            result.append((number, field_name, value))
            continue
        if key not in merged:
            merged[key] = (number, field_name, {**value})
            result.append(merged[key])
            continue
        target = merged[key][2]
        for list_name in ("contacts", "messages", "statuses"):
            items = value.get(list_name)
            if items:
                existing = target.setdefault(list_name, [])
                existing.extend(item for item in items if item not in existing)
    return result
