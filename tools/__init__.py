"""Command-line tools built on the library: reproduce a published table, summarise its runs."""
