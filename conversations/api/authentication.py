"""DRF's token authentication, its read hand-written.

Every API request names its token: the stock class reads the token and its
user through the ORM, and the first permission check reads the user's
permissions in another statement. Here the three come in one statement
(accounts.backends.token_and_user); what is accepted and refused, and the
answers' texts, are DRF's own.
"""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from accounts.backends import token_and_user


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        found = token_and_user(key)
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
