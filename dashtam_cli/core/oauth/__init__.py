"""OAuth2 authorization-code login: state, PKCE, the loopback listener, the token exchange."""
