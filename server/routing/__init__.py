"""Routers: their definitions (`spec`), the live compiled set (`registry`) and its state file
(`persistence`), the selection policies (`policies`) and the plan of models to try for one
decision (`plan`)."""
