"""Generate components/clean/phone_regions.py: language -> phone regions, from CLDR.

Run from the repo root: PYTHONPATH=<unpacked babel-2.18.0 wheel> .venv/bin/python pipelines/gen_phone_regions.py > components/clean/phone_regions.py
(Babel is needed only here, so it is not a dependency of the project; importing this module runs nothing.)
Status and population share per (territory, language): CLDR via Babel 2.18.0 `territory_languages`.
Territory populations (millions): CLDR territoryInfo (cldr-core supplemental/territoryInfo.json), only
territories above 0.5 M are listed; smaller ones count as 0 speakers (kept only as a language's likely territory).
"""

from collections import defaultdict

import phonenumbers as pn
from py3langid.langid import MODEL_FILE, LanguageIdentifier

POP = dict(
AE=5.93, AF=33.3, AL=3.04, AM=3.05, AO=20.2, AR=43.9, AT=8.71, AU=23.0, AZ=9.87, BA=3.86, BD=156.2, BE=11.4,
BF=19.5, BG=7.14, BH=1.38, BI=11.1, BJ=10.7, BO=11.0, BR=205.8, BT=0.75, BW=2.21, BY=9.57, CA=35.4, CD=81.3,
CF=5.51, CG=4.85, CH=8.18, CI=23.7, CL=17.7, CM=24.4, CN=1373.5, CO=47.2, CR=4.87, CU=11.2, CV=0.55, CY=1.21,
CZ=10.6, DE=80.7, DJ=0.85, DK=5.59, DO=10.6, DZ=40.3, EC=16.1, EE=1.26, EG=94.7, EH=0.59, ER=5.87, ES=48.6,
ET=102.4, FI=5.50, FJ=0.92, FR=66.8, GA=1.74, GB=64.4, GE=4.93, GH=26.9, GM=2.01, GN=12.1, GQ=0.76, GR=10.8,
GT=15.2, GW=1.76, GY=0.74, HK=7.17, HN=8.89, HR=4.31, HT=10.5, HU=9.87, IC=2.10, ID=258.3, IE=4.95, IL=8.17,
IN=1266.9, IQ=38.1, IR=82.8, IT=62.0, JM=2.97, JO=8.19, JP=126.7, KE=46.8, KG=5.73, KH=15.96, KM=0.79, KP=25.1,
KR=50.9, KW=2.83, KZ=18.4, LA=7.02, LB=6.24, LK=22.2, LR=4.30, LS=1.95, LT=2.85, LU=0.58, LV=1.97, LY=6.54,
MA=33.7, MD=3.51, ME=0.64, MG=24.4, MK=2.10, ML=17.5, MM=56.9, MN=3.03, MO=0.60, MR=3.68, MU=1.35, MW=18.6,
MX=123.2, MY=31.0, MZ=25.9, NA=2.44, NE=18.6, NG=186.1, NI=5.97, NL=17.0, NO=5.27, NP=29.0, NZ=4.47, OM=3.36,
PA=3.71, PE=30.7, PG=6.79, PH=102.6, PK=202.0, PL=38.5, PR=3.58, PS=4.45, PT=10.8, PY=6.86, QA=2.26, RE=0.79,
RO=21.6, RS=7.14, RU=142.4, RW=13.0, SA=28.2, SB=0.64, SD=36.7, SE=9.88, SG=5.78, SI=1.98, SK=5.45, SL=6.02,
SN=14.3, SO=10.8, SR=0.59, SS=12.5, SV=6.16, SY=17.2, SZ=1.45, TD=11.9, TG=7.76, TH=68.2, TJ=8.33, TL=1.26,
TM=5.29, TN=11.1, TR=80.3, TT=1.22, TW=23.5, TZ=52.5, UA=44.2, UG=38.3, US=324.0, UY=3.35, UZ=29.5, VE=30.9,
VN=95.3, XK=1.88, YE=27.4, ZA=54.3, ZM=15.5, ZW=14.5,
)
MIN_SPEAKERS_M = 1.0
ALIASES = {"no": "nb", "tl": "fil"}  # py3langid label -> CLDR language


def main() -> None:
    """Print the module to stdout (see the module docstring for the command)."""
    from babel.core import get_global

    labels = sorted(LanguageIdentifier.from_model_file(MODEL_FILE).labels)
    terr = get_global("territory_languages")
    likely = get_global("likely_subtags")
    supported = pn.SUPPORTED_REGIONS

    def likely_region(lang):
        tag = likely.get(lang) or ""
        parts = tag.split("_")
        reg = [p for p in parts[1:] if len(p) == 2 and p.isalpha() and p.isupper()]
        return reg[0] if reg and reg[0] in supported else None

    out = {}
    for label in labels:
        lang = ALIASES.get(label, label)
        speakers = defaultdict(float)
        for t, langs in terr.items():
            if t not in supported:
                continue
            for code, info in langs.items():
                if code.split("_")[0] == lang and info["official_status"]:
                    speakers[t] = max(speakers[t], POP.get(t, 0.0) * info["population_percent"] / 100)
        ranked = sorted((t for t, s in speakers.items() if s >= MIN_SPEAKERS_M), key=lambda t: (-speakers[t], t))
        first = likely_region(lang)
        if first and first not in ranked:
            ranked.insert(0, first)
        regions, codes = [], set()
        for t in ranked:  # one region per calling code: the main region of a code parses all of its numbers
            cc = pn.country_code_for_region(t)
            main_region = pn.region_code_for_country_code(cc)
            r = main_region if main_region in supported else t
            if cc not in codes:
                codes.add(cc)
                regions.append(r)
        if regions:
            out[label] = regions

    print('"""Phone-number regions per language (py3langid labels), generated from CLDR — do not edit by hand.')
    print()
    print("Rule: the territories where CLDR gives the language official status (official, de facto or")
    print(f"regional) with at least {MIN_SPEAKERS_M:g} million speakers (territory population x the language's")
    print("population share), most speakers first; the language's CLDR likely-subtags territory is")
    print("always kept (Icelandic -> IS). One region per country calling code: the code's main region")
    print("(libphonenumber's) stands for all of it, since a national number is parsed against the")
    print("calling code's plan (US covers CA and the rest of +1). Languages absent here (eo, vo, gom,")
    print("...) use PiiConfig.phone_default_regions.")
    print()
    print("Sources: official status and population share from CLDR as shipped in Babel 2.18.0")
    print("(babel.core.get_global('territory_languages'), 'likely_subtags'); territory populations from")
    print("CLDR territoryInfo (unicode-cldr/cldr-core supplemental/territoryInfo.json). Regenerate with")
    print("pipelines/gen_phone_regions.py (needs the Babel 2.18.0 wheel unpacked on PYTHONPATH).")
    print('"""')
    print()
    print("LANGUAGE_REGIONS: dict[str, tuple[str, ...]] = {")
    for label, regs in out.items():
        print(f"    {label!r}: ({', '.join(repr(r) for r in regs)}{',' if len(regs) == 1 else ''}),")
    print("}")
    missing = [l for l in labels if l not in out]
    print(f"# py3langid labels without a region (use default_regions): {', '.join(missing)}")


if __name__ == "__main__":
    main()
