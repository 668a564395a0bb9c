package wire

// HeaderDict is headerDict, for tests that take format-3 packs apart.
const HeaderDict = headerDict
