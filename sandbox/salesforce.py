"""Placeholder until the salesforce emulator lands (written by another helper; overwrite freely)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sandbox.faults import ErrorStyle
from sandbox.state import VendorSchema

router = APIRouter()
SCHEMA = VendorSchema(vendor="salesforce", ddl="")
ERROR_STYLE = ErrorStyle(
    error=lambda status, message: JSONResponse({"message": message}, status_code=status),
    rate_limited=lambda retry_after: JSONResponse({"message": "rate limited"}, status_code=429),
)
