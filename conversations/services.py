"""Every business action of the helpdesk, one verb function each.

Views, consumers, tasks, admin actions, management commands and the API all
call these; they receive valid domain values and raise domain errors.
"""

from django.db import transaction

from .models import MetaApp, WhatsAppNumber


@transaction.atomic
def add_whatsapp_number(
    *,
    phone_number_id: str,
    display_phone_number: str,
    waba_id: str,
    access_token: str,
    app_secret: str,
    verify_token: str,
    name: str = "",
    throughput: int = 80,
    app_id: str = "",
) -> tuple[WhatsAppNumber, bool]:
    """Add a number, or update the one with this phone-number id.

    Numbers given the same app id share that Meta app's secret and verify
    token, the latest call's values winning. Without an app id a new number
    gets an app of its own, and an existing number keeps its app.
    Return the number and whether it was created.
    """
    number = (
        WhatsAppNumber.objects.select_for_update()
        .select_related("app")
        .filter(phone_number_id=phone_number_id)
        .first()
    )
    if app_id:
        app, _ = MetaApp.objects.select_for_update().get_or_create(
            app_id=app_id, defaults={"name": f"Meta app {app_id}"}
        )
    elif number is not None:
        app = number.app
    else:
        app = MetaApp(name=name or display_phone_number)
    app.app_secret = app_secret
    app.verify_token = verify_token
    app.full_clean()
    app.save()

    created = number is None
    if created:
        number = WhatsAppNumber(phone_number_id=phone_number_id)
    number.app = app
    number.name = name or number.name or display_phone_number
    number.display_phone_number = display_phone_number
    number.waba_id = waba_id
    number.access_token = access_token
    number.throughput = throughput
    number.full_clean()
    number.save()
    return number, created
