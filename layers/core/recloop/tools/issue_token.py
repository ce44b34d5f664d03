"""Issue a client token, signed with the key in the stack's token secret (docs/authentication.md):

    python -m recloop.tools.issue_token --service checkout-backend [--ttl-hours 720]
    python -m recloop.tools.issue_token --user user_123 [--ttl-hours 1]

The secret is --secret-arn or AUTH_SIGNING_SECRET_ARN (the stack's TokenSigningSecretArn output); AWS credentials
and region come from the environment, as for the AWS CLI. Prints the token alone, for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from pydantic import ValidationError

from recloop.access.keys import SigningKeys
from recloop.access.principal import Scope
from recloop.access.tokens import TokenClaims, issue_token
from recloop.adapters.secrets import Secret

# A service token is a credential kept by a backend and renewed by its operator; a user token is minted per
# sign-in and should die with the session.
DEFAULT_TTL_HOURS = {Scope.SERVICE: 24.0 * 30, Scope.USER: 1.0}
MAX_TTL_HOURS = 24.0 * 366


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Issue a RecLoop client token.")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--service", metavar="NAME", help="a trusted backend: acts for any user, may operate the service")
    who.add_argument("--user", metavar="USER_ID", help="one user: may act for this user_id only")
    parser.add_argument("--ttl-hours", type=float, help="lifetime (default: 720 for a service, 1 for a user)")
    parser.add_argument("--secret-arn", default=os.environ.get("AUTH_SIGNING_SECRET_ARN", ""))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    args = parser.parse_args(argv)

    claims = {"sub": args.service, "scope": Scope.SERVICE} if args.service else {"sub": args.user, "scope": Scope.USER}
    try:  # the claims the authorizer will check, checked now
        principal = TokenClaims.model_validate({**claims, "uid": args.user}).principal()
    except ValidationError as exc:
        parser.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    ttl_hours = DEFAULT_TTL_HOURS[principal.scope] if args.ttl_hours is None else args.ttl_hours
    if not 0 < ttl_hours <= MAX_TTL_HOURS:
        parser.error(f"--ttl-hours must be more than 0 and at most {MAX_TTL_HOURS:g}")
    if not args.secret_arn:
        parser.error("give --secret-arn or set AUTH_SIGNING_SECRET_ARN (the stack's TokenSigningSecretArn output)")
    if not args.region:
        parser.error("give --region or set AWS_REGION")

    key = SigningKeys(Secret(args.secret_arn, args.region)).signing_key()
    print(issue_token(principal, key, now=time.time(), ttl_seconds=ttl_hours * 3600))
    return 0


if __name__ == "__main__":
    sys.exit(main())
