"""The sign-in process: `python -m bokeh_stack.daemons.signin SIGNIN_FILE`, a small tornado server on a unix socket that
nginx alone reaches (settings auth.mode password or oidc). nginx asks it, by `auth_request`, about every index,
app page, autoload.js and websocket; it also serves the pages a person sees:

    <prefix>/                the index, listing only the apps this user may open
    <prefix>/login           the sign-in form (password) or the way to the OpenID Connect provider (oidc)
    <prefix>/login/callback  where the provider sends the browser back (oidc)
    <prefix>/logout          signs out: a POST with the form's CSRF token (a GET shows the button)

The signed-in state is one signed cookie (COOKIE: the user's name and groups, a random id, and in mode password a
fingerprint of the user's password hash and groups), HttpOnly, SameSite=Lax, Secure under https, HMAC-SHA256 with
the sign-in key: a secret of its own (signin.key beside the users file, made at provision time), which only this
process reads; it runs as a user other than the workers'. Removing a user or changing a password or groups
revokes that user's cookies and closes their websockets on every worker; signing out revokes that one cookie
(rules.RevokedCookies). SIGNIN_FILE (signin.json, rendered from the settings) says the rest.
"""
