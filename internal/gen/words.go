package gen

// The vocabulary is fixed so that generated text compresses like real prose:
// common words come first and are picked more often (see gen.word).
var words = [...]string{
	"the", "to", "and", "a", "of", "in", "is", "for", "on", "it",
	"we", "this", "that", "be", "with", "please", "can", "you", "will", "at",
	"check", "site", "task", "done", "today", "team", "need", "new", "from", "by",
	"are", "not", "have", "as", "our", "all", "update", "after", "before", "report",
	"customer", "order", "work", "shift", "room", "floor", "door", "safety", "inspection", "photo",
	"form", "issue", "fixed", "open", "closed", "review", "approved", "pending", "tomorrow", "morning",
	"afternoon", "evening", "week", "next", "last", "first", "second", "third", "again", "still",
	"should", "would", "could", "must", "may", "also", "just", "only", "more", "less",
	"some", "any", "every", "each", "other", "same", "different", "ready", "started", "finished",
	"meeting", "call", "email", "message", "note", "comment", "question", "answer", "thanks", "ok",
	"sure", "yes", "no", "maybe", "soon", "later", "now", "here", "there", "where",
	"when", "what", "which", "who", "how", "why", "because", "if", "then", "so",
	"but", "or", "up", "down", "out", "over", "under", "into", "about", "between",
	"machine", "pump", "valve", "filter", "sensor", "panel", "cable", "light", "lamp", "switch",
	"boiler", "heater", "cooler", "fan", "motor", "belt", "gear", "bolt", "screw", "pipe",
	"leak", "noise", "damage", "crack", "rust", "dust", "water", "oil", "gas", "power",
	"battery", "charger", "phone", "tablet", "laptop", "printer", "scanner", "badge", "key", "lock",
	"truck", "van", "car", "route", "delivery", "pickup", "warehouse", "store", "shelf", "pallet",
	"box", "package", "label", "barcode", "stock", "count", "inventory", "supplier", "invoice", "quote",
	"price", "cost", "budget", "estimate", "hours", "minutes", "days", "time", "date", "deadline",
	"schedule", "plan", "project", "phase", "milestone", "goal", "target", "result", "status", "progress",
	"client", "visit", "contract", "service", "maintenance", "repair", "install", "replace", "clean", "test",
	"measure", "record", "log", "sign", "submit", "send", "receive", "confirm", "cancel", "assign",
	"manager", "supervisor", "technician", "driver", "operator", "engineer", "nurse", "guard", "cleaner", "staff",
	"north", "south", "east", "west", "building", "entrance", "exit", "parking", "lobby", "kitchen",
	"office", "hall", "stairs", "elevator", "roof", "basement", "yard", "gate", "fence", "wall",
	"window", "ceiling", "carpet", "tile", "paint", "glass", "steel", "wood", "concrete", "plastic",
	"red", "blue", "green", "yellow", "black", "white", "grey", "orange", "small", "large",
	"big", "little", "old", "broken", "missing", "wrong", "right", "left", "good", "bad",
	"quick", "slow", "late", "early", "urgent", "important", "minor", "major", "critical", "normal",
	"high", "low", "medium", "full", "empty", "half", "whole", "part", "piece", "set",
	"go", "come", "take", "make", "get", "give", "put", "keep", "let", "see",
	"look", "find", "use", "try", "ask", "tell", "show", "help", "move", "turn",
	"start", "stop", "finish", "wait", "leave", "bring", "carry", "hold", "run", "walk",
	"think", "know", "want", "like", "feel", "seem", "mean", "say", "write", "read",
	"list", "item", "step", "point", "area", "zone", "unit", "level", "line", "side",
	"front", "back", "top", "bottom", "middle", "corner", "edge", "center", "inside", "outside",
	"alarm", "fire", "smoke", "first-aid", "kit", "helmet", "gloves", "vest", "boots", "mask",
	"training", "course", "policy", "rule", "procedure", "manual", "guide", "checklist", "template", "sample",
	"audit", "quality", "standard", "score", "rating", "feedback", "survey", "incident", "accident", "hazard",
	"risk", "control", "action", "owner", "reviewer", "approver", "requester", "team-lead", "crew", "partner",
	"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "march", "june",
	"already", "almost", "never", "always", "often", "sometimes", "usually", "probably", "really", "very",
	"well", "better", "best", "worse", "enough", "too", "much", "many", "few", "several",
	"one", "two", "three", "four", "five", "six", "ten", "twenty", "hundred", "dozen",
	"customer's", "team's", "don't", "can't", "won't", "it's", "we're", "they're", "i'll", "let's",
	"mobile", "app", "offline", "sync", "upload", "download", "signal", "network", "wifi", "account",
	"password", "login", "access", "permission", "group", "channel", "thread", "reply", "mention", "reaction",
	"attachment", "file", "image", "picture", "video", "document", "spreadsheet", "folder", "link", "copy",
	"coffee", "lunch", "break", "weather", "rain", "snow", "wind", "heat", "cold", "storm",
	"traffic", "road", "bridge", "tunnel", "station", "airport", "port", "city", "town", "village",
	"hospital", "school", "hotel", "restaurant", "shop", "mall", "factory", "plant", "farm", "depot",
}

var firstNames = [...]string{
	"Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas",
	"Kira", "Liam", "Maya", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Samir", "Tara",
	"Umar", "Vera", "Wei", "Xenia", "Yusuf", "Zoë", "José", "Łukasz", "Søren", "Chloé",
	"Mateo", "Priya", "Kenji", "Amara", "Lars", "Fatima", "Diego", "Elif", "Nikolai", "Aisha",
	"Tomás", "Mei", "Omar", "Sofia", "Raj", "Hanna", "Björn", "Leila", "Marco", "Nia",
}

var lastNames = [...]string{
	"Smith", "Müller", "García", "Rossi", "Nowak", "Kim", "Nguyen", "Silva", "Jensen", "Okafor",
	"Dubois", "Kowalski", "Yilmaz", "Tanaka", "Patel", "Cohen", "Larsen", "Novák", "Fischer", "Moreau",
	"Andersen", "Ivanova", "Costa", "Haddad", "Schmidt", "Brown", "Wilson", "Martin", "Lopez", "Weber",
	"Khan", "Singh", "Ali", "Sato", "Chen", "Wang", "Ortiz", "Ramos", "Berg", "Lindqvist",
}

var (
	departments = [...]string{"Operations", "Field Service", "Logistics", "Facilities", "Sales", "Support", "Quality", "Safety", "Engineering", "Retail"}
	locales     = [...]string{"en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pl-PL", "pt-BR", "ja-JP", "tr-TR", "nl-NL"}
	timezones   = [...]string{"Europe/Berlin", "Europe/London", "America/New_York", "America/Chicago", "Asia/Tokyo", "Europe/Warsaw", "America/Sao_Paulo", "Europe/Paris"}
	roles       = [...]string{"member", "member", "member", "member", "lead", "manager", "admin", "guest"}
	statuses    = [...]string{"todo", "in_progress", "blocked", "in_review", "done"}
	priorities  = [...]string{"low", "normal", "normal", "high", "urgent"}
	formStates  = [...]string{"draft", "submitted", "reviewed", "approved", "rejected"}
	visibility  = [...]string{"public", "private", "secret"}
	formNames   = [...]string{"safety-inspection", "site-visit", "daily-report", "incident-report", "delivery-check", "vehicle-check", "cleaning-log", "customer-signoff"}
	choices     = [...]string{"yes", "no", "n/a", "partly", "needs follow-up"}
	emojis      = [...]string{"👍", "❤️", "😂", "🎉", "👀", "✅", "🙏", "🔥"}
	tagWords    = [...]string{"electrical", "plumbing", "hvac", "safety", "customer", "warranty", "recurring", "onboarding", "vip", "backlog", "quick-win", "follow-up", "night-shift", "audit", "parts-needed"}
	projects    = [...]string{"Spring Maintenance", "Store Rollout", "Fleet Renewal", "Warehouse Move", "Safety Week", "Q3 Audit", "New Site North", "Customer Care"}
)
