"""Use cases: each function takes plain values, returns a frozen result, raises LayoutToolError."""
