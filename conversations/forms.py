from django import forms

from .models import CallbackEndpoint, MetaApp, WhatsAppNumber, mask_secret


class SecretField(forms.CharField):
    """A secret that is never rendered back; left blank, the stored one stays."""

    widget = forms.PasswordInput(render_value=False)


class SecretKeepingForm(forms.ModelForm):
    """Admin form for models with secrets: show them masked, keep them if blank.

    The admin leaves fields out (all of them for staff who may only view),
    so only the secret fields the form has are handled.
    """

    secret_fields: tuple[str, ...] = ()

    def _secret_fields(self) -> list[str]:
        return [name for name in self.secret_fields if name in self.fields]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self._secret_fields():
            current = getattr(self.instance, name, "")
            field = SecretField(
                label=self.fields[name].label,
                required=not current,
                strip=True,
                help_text=(
                    f"Stored: {mask_secret(current)}. Leave blank to keep it."
                    if current
                    else self.fields[name].help_text
                ),
            )
            self.fields[name] = field

    def clean(self):
        cleaned = super().clean()
        for name in self._secret_fields():
            if not cleaned.get(name):
                cleaned[name] = getattr(self.instance, name, "")
        return cleaned

    def _post_clean(self):
        for name in self._secret_fields():
            if not self.cleaned_data.get(name):
                self.cleaned_data[name] = getattr(self.instance, name, "")
        super()._post_clean()


class MetaAppAdminForm(SecretKeepingForm):
    secret_fields = ("app_secret", "verify_token")

    class Meta:
        model = MetaApp
        fields = ["name", "app_id", "app_secret", "verify_token"]


class WhatsAppNumberAdminForm(SecretKeepingForm):
    secret_fields = ("access_token",)

    class Meta:
        model = WhatsAppNumber
        fields = [
            "name",
            "app",
            "phone_number_id",
            "display_phone_number",
            "waba_id",
            "access_token",
            "throughput",
            "teams",
            "is_active",
        ]


class CallbackEndpointAdminForm(SecretKeepingForm):
    secret_fields = ("secret",)
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = CallbackEndpoint
        fields = ["name", "url", "secret", "active"]
