import factory
from django.utils import timezone

from accounts.models import Team, User
from conversations.models import (
    Conversation,
    Customer,
    Message,
    MetaApp,
    WhatsAppNumber,
)


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Team {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"agent{n}")
    display_name = factory.Faker("name")
    password = factory.django.Password("agent-password")


class MetaAppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MetaApp

    name = factory.Sequence(lambda n: f"App {n}")
    app_id = factory.Sequence(lambda n: f"{300000000000000 + n}")
    app_secret = factory.Faker("sha256")
    verify_token = factory.Faker("password", length=16)


class WhatsAppNumberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WhatsAppNumber

    app = factory.SubFactory(MetaAppFactory)
    name = factory.Sequence(lambda n: f"Support line {n}")
    phone_number_id = factory.Sequence(lambda n: f"{100000000000000 + n}")
    display_phone_number = factory.Sequence(lambda n: f"+1555{1000000 + n}")
    waba_id = factory.Sequence(lambda n: f"{200000000000000 + n}")
    access_token = factory.Faker("sha256")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    wa_id = factory.Sequence(lambda n: f"49170{1000000 + n}")
    phone = factory.LazyAttribute(lambda customer: f"+{customer.wa_id}")
    profile_name = factory.Faker("name")


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    customer = factory.SubFactory(CustomerFactory)
    number = factory.SubFactory(WhatsAppNumberFactory)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    direction = Message.Direction.INBOUND
    type = "text"
    text = factory.Faker("sentence")
    payload = factory.LazyAttribute(lambda message: {"body": message.text})
    wamid = factory.Sequence(lambda n: f"wamid.TEST{n:08d}")
    status = Message.Status.RECEIVED
    timestamp = factory.LazyFunction(timezone.now)
