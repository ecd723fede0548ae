"""Curated name data for name scrubbing: nickname groups, spelling variants and name-shaped words.

The scrubber (``gateway.names``) matches every participant name part together with the short forms and
spellings people and transcription engines use for it. These tables are deliberately small, hand-curated
and data-only, so that a reviewer can read and extend them; all entries are lower-case ASCII (diacritics are
folded before matching).
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    """A word list written as running text, so that a long table stays readable."""
    return frozenset(text.split())


NICKNAME_GROUPS: tuple[tuple[str, ...], ...] = (
    ("abigail", "abby", "abbie", "gail"),
    ("alan", "al"),
    ("albert", "al", "bert", "bertie"),
    ("alexander", "alex", "alec", "sandy", "xander"),
    ("alexandra", "alex", "alexa", "sandra", "sandy", "lexi"),
    ("alfred", "alf", "fred", "freddie"),
    ("andrew", "andy", "drew"),
    ("angela", "angie"),
    ("anthony", "tony"),
    ("antonio", "tony", "toni"),
    ("arnold", "arnie"),
    ("arthur", "art", "artie"),
    ("barbara", "barb", "barbie"),
    ("benjamin", "ben", "benji", "benny"),
    ("bernard", "bernie"),
    ("bernadette", "bernie", "detta"),
    ("beverly", "bev"),
    ("bradley", "brad"),
    ("bradford", "brad"),
    ("caroline", "carol", "carrie", "caro"),
    ("carolyn", "carol", "carrie"),
    ("catherine", "cathy", "cath", "kate", "katie"),
    ("charles", "charlie", "chuck", "chas", "chaz"),
    ("charlotte", "charlie", "lottie", "char"),
    ("christina", "chris", "tina", "christy"),
    ("christine", "chris", "tina", "christy"),
    ("christopher", "chris", "topher", "kit"),
    ("clifford", "cliff"),
    ("cynthia", "cindy"),
    ("daniel", "dan", "danny"),
    ("david", "dave", "davey", "davy"),
    ("deborah", "deb", "debbie", "debby"),
    ("dennis", "denny"),
    ("derek", "del"),
    ("dominic", "dom"),
    ("donald", "don", "donnie"),
    ("douglas", "doug"),
    ("edward", "ed", "eddie", "ted", "ned"),
    ("edwin", "ed", "eddie"),
    ("elizabeth", "liz", "lizzie", "beth", "betty", "betsy", "eliza", "libby", "bess"),
    ("emily", "em", "emmy"),
    ("eugene", "gene"),
    ("frances", "fran", "frankie"),
    ("francis", "frank", "fran"),
    ("francisco", "paco", "frank", "cisco"),
    ("franklin", "frank"),
    ("frederick", "fred", "freddie"),
    ("gabriel", "gabe"),
    ("gabrielle", "gabby", "gaby"),
    ("geoffrey", "geoff", "jeff"),
    ("jeffrey", "jeff"),
    ("gerald", "gerry", "jerry"),
    ("gerard", "gerry"),
    ("gordon", "gord", "gordie"),
    ("gregory", "greg"),
    ("harold", "harry", "hal"),
    ("henry", "harry", "hank", "hal"),
    ("isabella", "izzy", "bella"),
    ("jacob", "jake", "jack"),
    ("jacqueline", "jackie", "jacquie", "jacqui"),
    ("james", "jim", "jimmy", "jamie", "jimbo"),
    ("janet", "jan", "jen"),
    ("jennifer", "jen", "jenny", "jenn"),
    ("jessica", "jess", "jessie"),
    ("john", "johnny", "jon"),
    ("jonathan", "jon", "jonny"),
    ("joseph", "joe", "joey", "jo"),
    ("joshua", "josh"),
    ("judith", "judy", "jude"),
    ("katherine", "kathy", "kate", "katie", "kat", "kay", "kathryn"),
    ("kathleen", "kathy", "kate", "katie"),
    ("kenneth", "ken", "kenny"),
    ("kimberly", "kim"),
    ("lawrence", "larry", "laurie"),
    ("leonard", "len", "lenny", "leo"),
    ("louis", "lou", "louie"),
    ("louise", "lou"),
    ("margaret", "maggie", "meg", "peggy", "marge", "greta"),
    ("martin", "marty"),
    ("matthew", "matt", "matty"),
    ("michael", "mike", "mick", "mickey", "mikey", "mitch"),
    ("michelle", "shelly", "michele", "shell"),
    ("mitchell", "mitch"),
    ("nathaniel", "nathan", "nate", "nat"),
    ("nathan", "nate"),
    ("nicholas", "nick", "nicky", "nico"),
    ("nicolas", "nick", "nico"),
    ("nicole", "nicky", "nikki", "niki"),
    ("oliver", "ollie"),
    ("olivier", "ollie"),
    ("pamela", "pam"),
    ("patricia", "pat", "patty", "patti", "trish", "tricia"),
    ("patrick", "pat", "paddy"),
    ("peter", "pete"),
    ("philip", "phil", "pip"),
    ("phillip", "phil"),
    ("randall", "randy", "rand"),
    ("raymond", "ray"),
    ("rebecca", "becky", "becca"),
    ("richard", "rich", "rick", "ricky", "dick", "richie", "rico"),
    ("robert", "rob", "bob", "bobby", "robbie", "robby", "bert"),
    ("roberto", "rob", "beto"),
    ("rodney", "rod"),
    ("roderick", "rod"),
    ("rodrigo", "rod"),
    ("ronald", "ron", "ronnie"),
    ("rosemary", "rose", "rosie"),
    ("rosemarie", "rose", "rosie"),
    ("samantha", "sam", "sammy"),
    ("samuel", "sam", "sammy"),
    ("sandra", "sandy", "sandi"),
    ("sebastian", "seb", "bastian"),
    ("stanley", "stan"),
    ("stephanie", "steph", "stephie"),
    ("stephen", "steve", "stevie"),
    ("steven", "steve", "stevie"),
    ("susan", "sue", "susie", "suzy"),
    ("suzanne", "sue", "suzy", "susie"),
    ("terrence", "terry"),
    ("theodore", "ted", "teddy", "theo"),
    ("thomas", "tom", "tommy"),
    ("timothy", "tim", "timmy"),
    ("tobias", "toby"),
    ("valerie", "val"),
    ("victoria", "vicky", "vikki", "tori"),
    ("vikram", "vik"),
    ("vincent", "vince", "vinny"),
    ("walter", "walt", "wally"),
    ("william", "will", "bill", "billy", "willie", "liam"),
    ("zachary", "zach", "zack"),
)
"""Each group is one given name with the short forms people use for it (Mike/Michael, Bill/William...)."""

SPELLING_GROUPS: tuple[tuple[str, ...], ...] = (
    ("alan", "allan", "allen", "alain"),
    ("ann", "anne", "anna"),
    ("brian", "bryan", "brien"),
    ("brendan", "brendon", "brandon"),
    ("bret", "brett"),
    ("carl", "karl"),
    ("caitlin", "caitlyn", "kaitlyn", "katelyn"),
    ("catherine", "katherine", "kathryn", "katharine", "cathryn", "kathrine", "catharine"),
    ("cathy", "kathy"),
    ("claire", "clare", "clair"),
    ("curt", "kurt"),
    ("deric", "derek", "derrick", "derick"),
    ("elliot", "elliott", "eliot"),
    ("eric", "erik", "erick"),
    ("geoffrey", "jeffrey", "jeffery", "geoffery"),
    ("geoff", "jeff"),
    ("jon", "john"),
    ("jonathan", "johnathan", "jonathon"),
    ("marc", "mark"),
    ("markus", "marcus"),
    ("matthew", "mathew"),
    ("michael", "micheal", "michal"),
    ("nicolas", "nicholas", "nikolas"),
    ("philip", "phillip", "filip"),
    ("rachel", "rachael"),
    ("rodger", "roger"),
    ("sara", "sarah"),
    ("sean", "shaun", "shawn", "shane"),
    ("sian", "shan"),
    ("stephen", "steven", "stephan", "stefan"),
    ("teresa", "theresa"),
    ("thomas", "tomas"),
    ("tracey", "tracy"),
    ("vicky", "vikki", "vicki"),
    ("zach", "zack", "zac"),
)
"""Spellings that transcripts and rosters use interchangeably for the same spoken name."""

WORD_NAMES: frozenset[str] = _words(
    """
    abbe able amber angel angle april art august autumn baker bands banks barber barnes bell bill bishop
    bland bloom bond booth bowling brain brazil brook brooks brown buck bush butcher call cannon carter
    castle chance chase champagne chancellor char cherry chip chuck church clay cliff cook cooper crane
    crown cub cutter dale dash dawn day deal dean dearth deck dee don dot drew duke dusty early earl
    easter ernest fair faith fast fields fish fisher ford fox frank free gale gay gene gill glen gold
    grace grant gray green grey guy hall hand harbor harbour hardy heather hill holly honey hope horn
    hunter irving ivy jack jade jay jean jewel joy judge june just kay key kind king knight lake lance
    lane laurel lee lily long love low lucky major mark marks mason matt may mayo mean mends mercy
    miles miller mint moore moss much murray nash new north page palmer park parks pat patience pearl
    penny pierce pine poole pool pope porter post potter powers pray price prince rich rick ring rob
    robin rock rod rose rosemary ross ruby rush rushing sage sandy savage say see shaw shields short
    silver sky small smith snow sommer spring stern steel stone storm strong summer sweet tan taylor
    terry tish toby trip trump tucker vance vis wade walker wall wallet walls ward ware watts way webb
    wells west white will wilt win winter wise wolf wood woods young mike harder better little baker
    gray grey hardy hale good best bright sharp strong noble rich pound bridge banks coffee cash
    """
)
"""Names that are also ordinary English words: these need context (capitalisation, no determiner...)."""

MONTH_NAMES: frozenset[str] = frozenset({"april", "may", "june", "july", "august"})

MODAL_NAMES: frozenset[str] = frozenset({"may", "will", "can", "might"})
"""Names that are also modal verbs: "Will the minister...", "May I...", at a sentence start."""

COMMON_WORDS: frozenset[str] = _words(
    """
    about above after again against also always among another any anyone around back based became
    because become been before being below best better between both bring brought call came come
    could days does done down during each early even ever every first five four from gave given
    going good great have here high into just keep kind know large last later least less like line
    little live long look made make many mark maybe mean might more most much must near need never
    next none note once only open other over part place plan point power quite rather real right
    same says seen should show side since some soon still such sure take than that their them then
    there these they thing think this those three through time today told took true under until upon
    very want well went were what when where which while whole will with within without work world
    would year years your january february march april june july august september october november
    december monday tuesday wednesday thursday friday saturday sunday german french british english
    canadian american chinese indian irish scottish welsh spanish italian dutch
    """
)
"""Frequent English words: a spelling slip of a name never matches one of these."""

COMMON_GIVEN_NAMES: frozenset[str] = _words(
    """
    aaron adam adrian aidan alice amanda amy andre andrea andreas angel anna anne antonio arthur
    barry ben bianca brandon bruce bryan carla carlos carmen chloe claire colin craig dale daniela
    darren denis denise derek diana diane diego dylan eileen elena ellen emma eric erin ethan eva
    fiona frances gary george gina grace graham hannah harry heather helen hugh ian irene isaac ivan
    jack jake jane jason javier jean jenna jeremy jerome jesse jill joan joel jordan jorge jose
    joyce juan julia julian julie justin karen karin keith kelly kevin kyle laura lauren leah lee
    leo liam linda lisa lucas lucy luis luke marco marcos maria marie mario marta martin mary mason
    megan mia michel miguel monica morgan nancy neil nina noah noel norman olga oscar owen pablo paul
    paula pedro philippe pierre rachel ralph raul rebecca ricardo rita roger rosa ross roy ruby russell
    ruth ryan sally sara scott sean sergio shane sharon simon sofia sonia stuart susan tanya tara tim
    tina todd tony travis trevor troy tyler vanessa victor walter wayne wendy
    """
)
"""Frequent given names beyond the nickname tables: never a spelling slip of another name."""

PLACE_PREFIXES: frozenset[str] = _words(
    "saint st ste sainte san santa fort port mount mt lake cape prince princess king queen"
)
"""A name after one of these is a place or institution: "Saint John", "St. Lawrence", "Prince Edward"."""

TITLES: frozenset[str] = _words(
    """
    mr mrs ms miss mx dr doctor prof professor hon honourable honorable right rt sir dame lord lady
    minister senator madam madame mister chair chairman chairwoman chairperson president premier deputy
    member colleague judge justice rev reverend captain general officer commissioner director secretary
    councillor councilor mayor governor ambassador chief acting vice leader speaker monsieur madame
    mademoiselle senor senora herr frau
    """
)
"""Words that introduce a person's name: a name after them is a mention, not part of a phrase."""

NAME_SUFFIXES: frozenset[str] = _words(
    "am mp ms mla msp mpp td jr sr ii iii iv phd md qc kc cpa cfa ceo cfo coo cto host"
)
"""Trailing role or post-nominal markers in display names and after spoken names."""

PARTICLES: frozenset[str] = _words("de del della der di da du dos das van von la le st ste ter ten")
"""Surname particles: part of a full surname, never a mention on their own."""

ROLE_NAMES: frozenset[str] = _words(
    """
    the chair acting operator moderator host meeting speaker interpreter clerk unknown participant guest
    presenter facilitator coordinator admin administrator secretary narrator interviewer audience caller
    cohost co-host organizer organiser external internal visitor contractor vendor client customer partner
    intern remote
    """
)
"""Display-name words that name a role rather than a person ("The Chair", "Speaker 1", "Operator")."""

DEVICE_WORDS: frozenset[str] = _words(
    """
    iphone ipad ipod android phone mobile cell tablet laptop desktop pc mac macbook computer galaxy pixel
    device room ext extension line dial call user team zoom teams meet webex no nr number
    """
)
"""Words that, beside a number in a display name, label a device, a room or a line rather than name a person
("Bea's iPhone 14", "Bea Okafor - Room 12", "User 42")."""

ROOM_WORDS: frozenset[str] = _words(
    """
    sales marketing support training finance accounts accounting legal engineering product design research
    operations ops dev devops it hr people recruiting office reception lobby front desk main board boardroom
    conference meeting huddle studio lab class classroom kitchen hall auditorium floor wing suite east west
    north south annex library lounge pod bay cafe canteen
    """
)
"""Ordinary words that, alone beside a number in a display name, label a room or a team ("Sales 2",
"Training Room 1", "Boardroom 2"). Any other word alone beside a number is taken for a name ("Wen 3")."""

CONNECTIVES: frozenset[str] = _words(
    """
    i im ill ive id we you he she they it its and but so or nor because if when then also as at on in of
    for to from with by the a an this that these those is are was were be been thanks thank yes no okay ok
    oh well hi hello good great sure right please sorry yeah yep go just now here there what why how who
    where which next over again let lets first second finally all both our my your their his her
    """
)
"""Capitalised words that commonly sit next to a name without being part of it ("Thanks Brian", "I")."""

DETERMINERS: frozenset[str] = _words(
    "the a an this these those our your their its every each any another such"
)
"""A name-word after one of these is a common noun: "the bill", "a grant", "this mark"."""

MODAL_FOLLOWERS: frozenset[str] = _words(
    "i we you he she they it there be been have not the a an this these those my your our their"
)
"""Words after a modal: "May I", "Will you", "may be", "Will the minister"."""

OBJECT_FOLLOWERS: frozenset[str] = _words("me us them him it my our their its")
"""Words after a verb: "Grant them", "Mark my words", "Bill us"."""

MONTH_PREPOSITIONS: frozenset[str] = _words(
    "in of since until till from by early late mid end through before after during last next this "
    "since between to on"
)


def groups_by_name(groups: tuple[tuple[str, ...], ...]) -> dict[str, frozenset[str]]:
    """Index name -> every name sharing a group with it (the name itself included)."""
    index: dict[str, set[str]] = {}
    for group in groups:
        for name in group:
            index.setdefault(name, set()).update(group)
    return {name: frozenset(members) for name, members in index.items()}


KNOWN_GIVEN_NAMES: frozenset[str] = COMMON_GIVEN_NAMES | frozenset(
    name for group in NICKNAME_GROUPS + SPELLING_GROUPS for name in group
)
"""Given names we know: a capitalised one before a surname marks another person ("Michael Jordan")."""
