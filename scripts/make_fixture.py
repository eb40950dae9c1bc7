#!/usr/bin/env python3
"""Generate a seeded, deterministic CMNEE-schema fixture and its zh->en translation memory.

The real CMNEE corpus is not shipped, so the pipeline runs on a synthetic stand-in written in
the same schema: military-news style Chinese documents annotated with the 8 CMNEE event types
and every role of each, plus a translation memory that maps every sentence (as split by
``ftbench.translate.segment_zh``), every trigger and every argument to English.

Each event is rendered from a pair of templates with the same slots, so the English sentence
contains each argument's English text verbatim and the Chinese sentence contains each argument's
Chinese text at the recorded offset. Lexicons are large and combined at random so answers
cannot be memorised: a model has to read the context.

Usage::

    python scripts/make_fixture.py [--seed 42] [--docs 360] [--out-dir data/raw]

Same seed and document count -> byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

from ftbench.cmnee import EVENT_ROLES, parse_document
from ftbench.translate import segment_zh

FIXTURE_NAME = "cmnee_fixture.json"
MEMORY_NAME = "translation_memory.json"
MIN_WORDS, MAX_WORDS = 35, 90


def _rows(block: str, ncols: int) -> list[tuple[str, ...]]:
    """Parse a lexicon table: one entry per line, fields separated by ' | '."""
    rows = []
    for line in block.strip().splitlines():
        fields = tuple(f.strip() for f in line.split(" | "))
        if len(fields) != ncols:
            raise ValueError(f"lexicon row {line!r} has {len(fields)} fields, expected {ncols}")
        rows.append(fields)
    return rows


# --------------------------------------------------------------------------------------------
# Lexicons (zh | en). A Chinese string always maps to the same English string (checked below).
# --------------------------------------------------------------------------------------------

#: kind | zh | en | short zh (for coreference, "-" if none) | short en
SUBJECTS = _rows("""
mil | 美国海军 | the US Navy | 美军 | US forces
mil | 美国空军 | the US Air Force | 美军 | US forces
mil | 美国陆军 | the US Army | 美军 | US forces
mil | 美国海军陆战队 | the US Marine Corps | 美军 | US forces
mil | 俄罗斯海军 | the Russian Navy | 俄军 | Russian forces
mil | 俄罗斯空天军 | the Russian Aerospace Forces | 俄军 | Russian forces
mil | 俄罗斯北方舰队 | Russia's Northern Fleet | 俄军 | Russian forces
mil | 日本海上自卫队 | the Japan Maritime Self-Defense Force | 日方 | the Japanese side
mil | 日本陆上自卫队 | the Japan Ground Self-Defense Force | 日方 | the Japanese side
mil | 印度陆军 | the Indian Army | 印军 | Indian forces
mil | 印度海军 | the Indian Navy | 印军 | Indian forces
mil | 英国皇家海军 | the Royal Navy | 英军 | British forces
mil | 英国皇家空军 | the Royal Air Force | 英军 | British forces
mil | 法国海军 | the French Navy | 法军 | French forces
mil | 法国空天军 | the French Air and Space Force | 法军 | French forces
mil | 德国联邦国防军 | the Bundeswehr | 德军 | German forces
mil | 韩国陆军 | the South Korean Army | 韩军 | South Korean forces
mil | 韩国海军 | the South Korean Navy | 韩军 | South Korean forces
mil | 澳大利亚皇家海军 | the Royal Australian Navy | 澳军 | Australian forces
mil | 以色列国防军 | the Israel Defense Forces | 以军 | Israeli forces
mil | 土耳其海军 | the Turkish Navy | 土军 | Turkish forces
mil | 意大利海军 | the Italian Navy | 意军 | Italian forces
mil | 加拿大皇家空军 | the Royal Canadian Air Force | 加军 | Canadian forces
mil | 波兰陆军 | the Polish Army | 波军 | Polish forces
mil | 巴西海军 | the Brazilian Navy | - | -
mil | 荷兰皇家海军 | the Royal Netherlands Navy | - | -
mil | 西班牙海军 | the Spanish Navy | - | -
mil | 新加坡武装部队 | the Singapore Armed Forces | 新军 | Singaporean forces
mil | 菲律宾海军 | the Philippine Navy | - | -
mil | 挪威皇家海军 | the Royal Norwegian Navy | - | -
mil | 瑞典空军 | the Swedish Air Force | - | -
mil | 北约快速反应部队 | the NATO Response Force | - | -
co | 洛克希德·马丁公司 | Lockheed Martin | 该公司 | the company
co | 雷神公司 | Raytheon | 该公司 | the company
co | 诺斯罗普·格鲁曼公司 | Northrop Grumman | 该公司 | the company
co | 波音公司 | Boeing | 该公司 | the company
co | 通用动力公司 | General Dynamics | 该公司 | the company
co | 英国航宇系统公司 | BAE Systems | 该公司 | the company
co | 欧洲导弹集团 | MBDA | 该公司 | the company
co | 泰雷兹集团 | Thales | 该公司 | the company
co | 萨博公司 | Saab | 该公司 | the company
co | 莱茵金属公司 | Rheinmetall | 该公司 | the company
co | 以色列航空航天工业公司 | Israel Aerospace Industries | 该公司 | the company
co | 韩华航空航天公司 | Hanwha Aerospace | 该公司 | the company
co | 达索航空公司 | Dassault Aviation | 该公司 | the company
co | 莱昂纳多公司 | Leonardo | 该公司 | the company
co | 三菱重工 | Mitsubishi Heavy Industries | 该公司 | the company
co | 印度斯坦航空有限公司 | Hindustan Aeronautics Limited | 该公司 | the company
co | 土耳其航空航天工业公司 | Turkish Aerospace Industries | 该公司 | the company
co | 韩国航空航天工业公司 | Korea Aerospace Industries | 该公司 | the company
co | 俄罗斯联合造船集团 | United Shipbuilding Corporation | 该公司 | the company
gov | 美国国防部 | the US Department of Defense | 五角大楼 | the Pentagon
gov | 美国国务院 | the US State Department | - | -
gov | 英国国防部 | the UK Ministry of Defence | 英方 | the British side
gov | 日本防卫省 | Japan's Ministry of Defense | 日方 | the Japanese side
gov | 德国政府 | the German government | 德方 | the German side
gov | 法国政府 | the French government | 法方 | the French side
gov | 澳大利亚国防部 | the Australian Department of Defence | 澳方 | the Australian side
gov | 加拿大政府 | the Canadian government | - | -
gov | 欧盟 | the European Union | - | -
gov | 韩国国防部 | South Korea's Ministry of National Defense | - | -
gov | 美国国防安全合作局 | the US Defense Security Cooperation Agency | - | -
armed | 武装分子 | militants | - | -
armed | 反政府武装 | rebel forces | 该武装 | the group
armed | 海盗 | pirates | - | -
armed | 不明身份武装人员 | unidentified gunmen | - | -
armed | 极端组织武装人员 | extremist fighters | 该组织 | the group
armed | 叛乱分子 | insurgents | - | -
armed | 民兵武装 | militia fighters | 该民兵组织 | the militia
armed | 武装团伙 | an armed gang | - | -
armed | 武装走私团伙 | armed smugglers | - | -
armed | 分离主义武装 | separatist fighters | 该武装 | the group
armed | 雇佣兵 | mercenaries | - | -
armed | 游击队 | guerrillas | - | -
armed | 地方武装 | local armed groups | - | -
""", 5)

#: Which subject kinds may act as Subject of each event type (repeated kinds weigh more).
SUBJECT_KINDS = {
    "Experiment": ("mil", "co"),
    "Manoeuvre": ("mil",),
    "Deploy": ("mil",),
    "Support": ("gov", "gov", "mil"),
    "Accident": ("mil",),
    "Exhibit": ("co", "co", "mil"),
    "Conflict": ("armed",),
    "Injure": ("mil",),
}

#: category | zh | en
EQUIPMENT = _rows("""
missile | 战斧巡航导弹 | Tomahawk cruise missile
missile | 标准-6防空导弹 | SM-6 air defense missile
missile | 民兵-3洲际弹道导弹 | Minuteman III intercontinental ballistic missile
missile | 萨尔马特洲际弹道导弹 | Sarmat intercontinental ballistic missile
missile | 锆石高超音速导弹 | Zircon hypersonic missile
missile | 布拉莫斯超音速巡航导弹 | BrahMos supersonic cruise missile
missile | 烈火-5弹道导弹 | Agni-V ballistic missile
missile | 海军打击导弹 | Naval Strike Missile
missile | 爱国者-3拦截弹 | PAC-3 interceptor
missile | 标枪反坦克导弹 | Javelin anti-tank missile
missile | 远程反舰导弹 | Long Range Anti-Ship Missile
missile | 流星空空导弹 | Meteor air-to-air missile
missile | 玄武-4弹道导弹 | Hyunmoo-4 ballistic missile
missile | 12式反舰导弹 | Type 12 anti-ship missile
missile | 鱼叉反舰导弹 | Harpoon anti-ship missile
missile | 紫菀-30防空导弹 | Aster 30 air defense missile
aircraft | F-35A战斗机 | F-35A fighter jet
aircraft | F-35B战斗机 | F-35B fighter jet
aircraft | B-21轰炸机 | B-21 bomber
aircraft | 苏-57战斗机 | Su-57 fighter jet
aircraft | 阵风战斗机 | Rafale fighter jet
aircraft | 台风战斗机 | Eurofighter Typhoon
aircraft | 鹰狮战斗机 | Gripen fighter jet
aircraft | KF-21战斗机 | KF-21 fighter jet
aircraft | MQ-9死神无人机 | MQ-9 Reaper drone
aircraft | 全球鹰无人机 | Global Hawk drone
aircraft | 旗手TB2无人机 | Bayraktar TB2 drone
aircraft | V-22鱼鹰倾转旋翼机 | V-22 Osprey tiltrotor aircraft
aircraft | P-8A反潜巡逻机 | P-8A maritime patrol aircraft
aircraft | C-390运输机 | C-390 transport aircraft
aircraft | 光辉战斗机 | Tejas fighter jet
aircraft | 赫尔墨斯900无人机 | Hermes 900 drone
ship | 福特级航空母舰 | Ford-class aircraft carrier
ship | 星座级护卫舰 | Constellation-class frigate
ship | 阿利·伯克级驱逐舰 | Arleigh Burke-class destroyer
ship | 45型驱逐舰 | Type 45 destroyer
ship | 26型护卫舰 | Type 26 frigate
ship | 最上级护卫舰 | Mogami-class frigate
ship | 维克兰特号航空母舰 | INS Vikrant aircraft carrier
ship | 戈尔什科夫海军上将级护卫舰 | Admiral Gorshkov-class frigate
ship | 弗吉尼亚级攻击核潜艇 | Virginia-class attack submarine
ship | 212A型潜艇 | Type 212A submarine
ship | 独岛级两栖攻击舰 | Dokdo-class amphibious assault ship
ship | 无人水面艇 | unmanned surface vessel
system | AN/SPY-6雷达 | AN/SPY-6 radar
system | 宙斯盾作战系统 | Aegis combat system
system | 萨德反导系统 | THAAD missile defense system
system | S-400防空系统 | S-400 air defense system
system | 铁穹防御系统 | Iron Dome defense system
system | 海马斯火箭炮系统 | HIMARS rocket system
system | IRIS-T防空系统 | IRIS-T air defense system
system | 新型舰载激光武器 | new shipborne laser weapon
system | 高超音速滑翔飞行器 | hypersonic glide vehicle
system | 相控阵预警雷达 | phased-array early warning radar
system | 电磁轨道炮 | electromagnetic railgun
vehicle | M1A2主战坦克 | M1A2 Abrams tank
vehicle | 豹2A7主战坦克 | Leopard 2A7 tank
vehicle | K2主战坦克 | K2 Black Panther tank
vehicle | T-90M主战坦克 | T-90M tank
vehicle | 斯特赖克装甲车 | Stryker armored vehicle
vehicle | 拳师犬装甲车 | Boxer armored vehicle
vehicle | K9自行榴弹炮 | K9 self-propelled howitzer
vehicle | 凯撒自行榴弹炮 | CAESAR self-propelled howitzer
vehicle | 无人地面车辆 | unmanned ground vehicle
""", 3)

MEASURE_WORD = {"missile": "枚", "aircraft": "架", "ship": "艘", "system": "套", "vehicle": "辆"}

#: Experiment triggers by equipment category (zh, en past tense = past participle).
EXPERIMENT_TRIGGERS = {
    "missile": (("试射", "test-fired"), ("发射", "launched")),
    "aircraft": (("试飞", "flight-tested"), ("测试", "tested")),
    "ship": (("测试", "tested"), ("检验", "evaluated")),
    "system": (("测试", "tested"), ("检验", "evaluated")),
    "vehicle": (("测试", "tested"), ("检验", "evaluated")),
}
TRIGGERS = {
    "Manoeuvre": (("举行", "held"), ("开展", "conducted"), ("实施", "carried out")),
    "Deploy": (("部署", "deployed"), ("派遣", "dispatched"), ("调派", "sent")),
    "Support": (("提供", "provided"), ("交付", "delivered"), ("捐赠", "donated"), ("出售", "sold")),
    "Exhibit": (("展出", "exhibited"), ("展示", "displayed"), ("公开", "unveiled"), ("推出", "showcased")),
    "Conflict": (("袭击", "attacked"), ("炮击", "shelled"), ("空袭", "bombed"), ("伏击", "ambushed"),
                 ("突袭", "raided")),
    "Injure": (("阵亡", "killed in action"), ("受伤", "wounded"), ("负伤", "injured"), ("身亡", "killed")),
}
ACCIDENT_TRIGGERS = {
    "air": (("坠毁", "crashed"), ("迫降", "made an emergency landing")),
    "sea": (("搁浅", "ran aground"), ("起火", "caught fire"), ("触礁", "struck a reef")),
    "land": (("侧翻", "overturned"), ("起火", "caught fire")),
}

#: Missile and weapons test ranges (Experiment Location for missiles and systems).
TEST_SITES = _rows("""
范登堡太空军基地 | Vandenberg Space Force Base
白沙导弹靶场 | White Sands Missile Range
普列谢茨克航天中心 | the Plesetsk Cosmodrome
阿卜杜勒·卡拉姆岛 | Abdul Kalam Island
太平洋导弹靶场 | the Pacific Missile Range Facility
赫布里底群岛靶场 | the Hebrides Range
卡普斯京亚尔靶场 | the Kapustin Yar test site
帕尔马希姆空军基地 | Palmachim Airbase
安岛航天靶场 | the Andøya Space range
伍默拉靶场 | the Woomera Range Complex
比斯卡罗斯试验场 | the Biscarrosse test centre
中国湖海军武器中心 | Naval Air Weapons Station China Lake
瓦洛普斯岛 | Wallops Island
白海海域 | the White Sea
钱迪普尔综合试验场 | the Integrated Test Range at Chandipur
安兴试验场 | the Anheung test site
""", 2)

#: Defence exhibitions (Exhibit Location).
SHOWS = _rows("""
范堡罗航展 | the Farnborough Airshow
新加坡航展 | the Singapore Airshow
迪拜航展 | the Dubai Airshow
欧洲萨托利防务展 | the Eurosatory exhibition
阿布扎比国际防务展 | the IDEX exhibition in Abu Dhabi
印度国际航展 | Aero India
伦敦国际防务展 | the DSEI exhibition in London
美国陆军协会年会 | the AUSA annual meeting
首尔国际航空航天与防务展 | the Seoul ADEX exhibition
柏林国际航展 | the ILA Berlin Air Show
伊斯坦布尔国际防务展 | the IDEF fair in Istanbul
巴黎航展 | the Paris Air Show
澳大利亚国际航展 | the Australian International Airshow
国际海事防务展 | the International Maritime Defence Show
利雅得世界防务展 | the World Defense Show in Riyadh
波兰国际防务工业展 | the MSPO exhibition in Poland
海空天博览会 | the Sea-Air-Space exposition
""", 2)

#: Sea areas (Manoeuvre Area, also sea accidents).
AREAS = _rows("""
波罗的海 | the Baltic Sea
地中海东部 | the eastern Mediterranean
阿拉伯海 | the Arabian Sea
日本海 | the Sea of Japan
挪威海 | the Norwegian Sea
菲律宾海 | the Philippine Sea
黑海 | the Black Sea
北海 | the North Sea
孟加拉湾 | the Bay of Bengal
亚丁湾 | the Gulf of Aden
红海 | the Red Sea
加利福尼亚南部海域 | waters off Southern California
夏威夷附近海域 | waters near Hawaii
北极地区 | the Arctic region
巴伦支海 | the Barents Sea
安达曼海 | the Andaman Sea
珊瑚海 | the Coral Sea
比斯开湾 | the Bay of Biscay
大西洋北部 | the North Atlantic
阿曼湾 | the Gulf of Oman
""", 2)

#: Land training areas (Manoeuvre Area and land accidents).
TRAINING_AREAS = _rows("""
格拉芬沃尔训练场 | the Grafenwoehr Training Area
欧文堡国家训练中心 | the National Training Center at Fort Irwin
德拉夫斯科训练场 | the Drawsko Pomorskie training area
东富士演习场 | the East Fuji Maneuver Area
索尔兹伯里平原训练区 | the Salisbury Plain Training Area
波卡兰靶场 | the Pokhran range
约翰逊堡联合战备训练中心 | the Joint Readiness Training Center at Fort Johnson
霍恩费尔斯训练场 | the Hohenfels Training Area
肖尔沃特湾训练区 | the Shoalwater Bay Training Area
蒙哥马利训练场 | the Montgomery training ground
""", 2)

#: Countries and regions (Deploy Location).
DEPLOY_SITES = _rows("""
波兰东部 | eastern Poland
罗马尼亚 | Romania
爱沙尼亚 | Estonia
拉脱维亚 | Latvia
立陶宛 | Lithuania
关岛 | Guam
冲绳 | Okinawa
迪戈加西亚岛 | Diego Garcia
吉布提 | Djibouti
澳大利亚达尔文 | Darwin, Australia
科威特 | Kuwait
卡塔尔 | Qatar
挪威北部 | northern Norway
芬兰 | Finland
阿拉斯加 | Alaska
斯洛伐克 | Slovakia
保加利亚 | Bulgaria
塞浦路斯 | Cyprus
约旦 | Jordan
沙特阿拉伯 | Saudi Arabia
日本九州 | Kyushu, Japan
菲律宾北部 | the northern Philippines
德国南部 | southern Germany
""", 2)

#: Conflict zones (Conflict and Injure Location).
CONFLICT_SITES = _rows("""
叙利亚东部 | eastern Syria
伊拉克北部 | northern Iraq
马里北部 | northern Mali
索马里南部 | southern Somalia
黎巴嫩南部 | southern Lebanon
也门 | Yemen
尼日尔西部 | western Niger
布基纳法索北部 | northern Burkina Faso
刚果（金）东部 | eastern DR Congo
乍得湖地区 | the Lake Chad region
苏丹达尔富尔地区 | Sudan's Darfur region
莫桑比克北部 | northern Mozambique
伊拉克安巴尔省 | Iraq's Anbar province
叙利亚代尔祖尔省 | Syria's Deir ez-Zor province
戈兰高地 | the Golan Heights
霍尔木兹海峡 | the Strait of Hormuz
曼德海峡 | the Bab el-Mandeb Strait
索马里沿海 | the Somali coast
阿富汗边境地区 | the Afghan border area
尼日利亚东北部 | northeastern Nigeria
""", 2)

#: Air bases (aircraft tests and air accidents).
AIR_BASES = _rows("""
嘉手纳空军基地 | Kadena Air Base
内利斯空军基地 | Nellis Air Force Base
拉姆施泰因空军基地 | Ramstein Air Base
岩国基地 | the Iwakuni base
三泽空军基地 | Misawa Air Base
阿维亚诺空军基地 | Aviano Air Base
爱德华兹空军基地 | Edwards Air Force Base
埃格林空军基地 | Eglin Air Force Base
埃尔门多夫-理查森联合基地 | Joint Base Elmendorf-Richardson
莱肯希思空军基地 | RAF Lakenheath
莫龙空军基地 | Moron Air Base
林克平空军基地 | Linkoping Air Base
""", 2)

#: Naval bases and ports (ship tests and sea accidents).
PORTS = _rows("""
诺福克海军基地 | Naval Station Norfolk
圣迭戈港 | the port of San Diego
横须贺港 | Yokosuka
朴茨茅斯港 | Portsmouth
土伦港 | Toulon
加里宁格勒 | Kaliningrad
釜山港 | Busan
维沙卡帕特南 | Visakhapatnam
哈利法克斯港 | Halifax harbour
珍珠港 | Pearl Harbor
达尔文港 | the port of Darwin
斯特林海军基地 | HMAS Stirling
基尔港 | Kiel
孟买 | Mumbai
""", 2)

#: Manoeuvre contents.
CONTENTS = _rows("""
联合反潜演习 | joint anti-submarine exercises
实弹射击训练 | live-fire training
两栖登陆演习 | amphibious landing exercises
防空反导演练 | air and missile defense drills
联合搜救演习 | joint search-and-rescue exercises
扫雷演习 | mine countermeasures exercises
城市作战训练 | urban warfare training
夜间空降训练 | night airborne training
远程奔袭训练 | long-range raid training
航母编队训练 | carrier strike group training
电子战演练 | electronic warfare drills
网络攻防演练 | cyber defense drills
冬季作战训练 | winter warfare training
海上补给演练 | underway replenishment drills
联合空中巡逻 | joint air patrols
反恐演习 | counterterrorism exercises
山地作战训练 | mountain warfare training
“坚定捍卫者”演习 | Exercise Steadfast Defender
“金色眼镜蛇”联合演习 | the Cobra Gold exercise
“马拉巴尔”海上联合演习 | the Malabar naval exercise
“肩并肩”联合演习 | the Balikatan exercise
“波罗的海行动”演习 | the BALTOPS exercise
“环太平洋”联合军演 | the RIMPAC exercise
“北方之盾”演习 | the Northern Shield exercise
直升机舰上起降训练 | shipboard helicopter landing training
大规模动员演练 | large-scale mobilization drills
""", 2)

#: Military units for Deploy: zh unit | zh measure | en singular (with article) | en plural.
UNITS = _rows("""
步兵营 | 个 | an infantry battalion | infantry battalions
装甲旅 | 个 | an armored brigade | armored brigades
炮兵连 | 个 | an artillery battery | artillery batteries
防空导弹连 | 个 | an air defense missile battery | air defense missile batteries
特种作战分队 | 支 | a special operations unit | special operations units
战斗机中队 | 个 | a fighter squadron | fighter squadrons
空降营 | 个 | an airborne battalion | airborne battalions
工兵连 | 个 | an engineer company | engineer companies
海军陆战队远征分队 | 支 | a Marine expeditionary unit | Marine expeditionary units
无人机侦察分队 | 支 | a drone reconnaissance unit | drone reconnaissance units
""", 4)
#: Platforms for Deploy: zh noun | zh measure | en plural.
PLATFORMS = _rows("""
战斗机 | 架 | fighter jets
驱逐舰 | 艘 | destroyers
护卫舰 | 艘 | frigates
加油机 | 架 | tanker aircraft
攻击直升机 | 架 | attack helicopters
轰炸机 | 架 | bombers
主战坦克 | 辆 | main battle tanks
""", 3)

#: Support recipients.
RECIPIENTS = _rows("""
乌克兰 | Ukraine
菲律宾海岸警卫队 | the Philippine Coast Guard
约旦武装部队 | the Jordanian Armed Forces
波兰 | Poland
爱沙尼亚国防军 | the Estonian Defence Forces
摩尔多瓦 | Moldova
越南海警 | the Vietnam Coast Guard
肯尼亚国防军 | the Kenya Defence Forces
索马里政府军 | Somali government forces
伊拉克安全部队 | Iraqi security forces
黎巴嫩武装部队 | the Lebanese Armed Forces
尼日利亚空军 | the Nigerian Air Force
格鲁吉亚 | Georgia
斯里兰卡海军 | the Sri Lankan Navy
加纳武装部队 | the Ghana Armed Forces
厄瓜多尔 | Ecuador
蒙古国 | Mongolia
突尼斯 | Tunisia
""", 2)

#: Support materials.
MATERIALS = _rows("""
一批弹药 | a batch of ammunition
155毫米炮弹 | 155mm artillery shells
防弹衣和头盔 | body armor and helmets
巡逻艇 | patrol boats
夜视设备 | night-vision equipment
医疗物资 | medical supplies
侦察无人机 | reconnaissance drones
野战口粮 | field rations
冬季作战服 | winter combat uniforms
扫雷设备 | mine-clearing equipment
军用卡车 | military trucks
通信设备 | communications equipment
航空燃油 | aviation fuel
发电机组 | power generators
雷达备件 | radar spare parts
轻武器 | small arms
便携式防空导弹 | man-portable air defense missiles
反无人机系统 | counter-drone systems
野战医院设备 | field hospital equipment
""", 2)
AID_ITEMS = _rows("""
军事援助 | military aid
武器装备 | weapons and equipment
防空装备 | air defense equipment
弹药 | ammunition
""", 2)

#: Conflict targets (all singular).
TARGETS = _rows("""
一处武器仓库 | a weapons depot
一个雷达站 | a radar station
一支补给车队 | a supply convoy
一座指挥所 | a command post
一艘商船 | a merchant ship
一个燃料库 | a fuel depot
一座桥梁 | a bridge
一个防空阵地 | an air defense position
一处武装分子据点 | a militant stronghold
一艘巡逻艇 | a patrol boat
一处机场 | an airfield
一个弹药库 | an ammunition depot
一个通信枢纽 | a communications hub
一个训练营地 | a training camp
一支巡逻队 | a patrol unit
一处边境哨所 | a border outpost
一座油田设施 | an oil field facility
一艘油轮 | an oil tanker
""", 2)

#: Accident platforms: kind | zh | measure | en (with article).
VEHICLES = _rows("""
air | F-16战斗机 | 架 | an F-16 fighter jet
air | F/A-18战斗机 | 架 | an F/A-18 fighter jet
air | MV-22鱼鹰倾转旋翼机 | 架 | an MV-22 Osprey tiltrotor aircraft
air | 黑鹰直升机 | 架 | a Black Hawk helicopter
air | 阿帕奇武装直升机 | 架 | an Apache attack helicopter
air | 苏-34轰炸机 | 架 | a Su-34 bomber
air | 米-8直升机 | 架 | a Mi-8 helicopter
air | T-38教练机 | 架 | a T-38 trainer jet
air | C-130运输机 | 架 | a C-130 transport aircraft
air | 鹰式教练机 | 架 | a Hawk trainer jet
sea | 驱逐舰 | 艘 | a destroyer
sea | 护卫舰 | 艘 | a frigate
sea | 扫雷舰 | 艘 | a minesweeper
sea | 登陆舰 | 艘 | a landing ship
sea | 补给舰 | 艘 | a supply ship
sea | 近海巡逻舰 | 艘 | an offshore patrol vessel
sea | 常规潜艇 | 艘 | a diesel-electric submarine
land | 装甲运兵车 | 辆 | an armored personnel carrier
land | 悍马军车 | 辆 | a Humvee
land | 布拉德利战车 | 辆 | a Bradley fighting vehicle
land | 自行火炮 | 辆 | a self-propelled gun
land | 重型运输车 | 辆 | a heavy transport truck
""", 4)

#: Accident results by platform kind: zh | en (an English clause).
RESULTS = {
    "air": _rows("""
两名飞行员遇难 | two pilots were killed
飞行员成功弹射逃生 | the pilot ejected safely
机上四名机组人员全部遇难 | all four crew members on board were killed
飞行员受轻伤 | the pilot suffered minor injuries
飞机完全损毁 | the aircraft was destroyed
一名机组人员失踪 | one crew member is missing
机上人员全部生还 | everyone on board survived
""", 2),
    "sea": _rows("""
三名水兵被烧伤 | three sailors suffered burns
舰体严重受损 | the hull was badly damaged
一名水兵死亡 | one sailor died
无人员伤亡 | no casualties were reported
推进系统受损 | the propulsion system was damaged
五名船员被烟雾呛伤 | five crew members suffered smoke inhalation
""", 2),
    "land": _rows("""
两名士兵死亡 | two soldiers died
五名士兵被送医治疗 | five soldiers were hospitalized
车辆严重损毁 | the vehicle was badly damaged
无人员伤亡 | no casualties were reported
一名驾驶员受重伤 | a driver was seriously injured
""", 2),
}

PEOPLE = _rows("""
士兵 | soldiers
官兵 | service members
水兵 | sailors
维和人员 | peacekeepers
军人 | troops
""", 2)

NUM_ZH = {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九"}
NUM_EN = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
          9: "nine"}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# --------------------------------------------------------------------------------------------
# Sentence templates. [a|b]: the first alternative whose slots are all present, else nothing.
# Slots are role names, "trigger", and per-type extras ("mw", "Veh").
# --------------------------------------------------------------------------------------------

TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "Experiment": (
        ("[{Date}，|据报道，]{Subject}[在{Location}]成功{trigger}了一{mw}{Equipment}，以评估其在复杂环境下的作战性能。",
         "[On {Date}, |According to reports, ]{Subject} successfully {trigger} the {Equipment}"
         "[ at {Location}] to assess its combat performance in complex conditions."),
        ("据外媒报道，{Subject}[于{Date}][在{Location}]{trigger}了一{mw}{Equipment}，各项数据均达到设计要求。",
         "Foreign media reported that {Subject} {trigger} the {Equipment}[ at {Location}][ on {Date}],"
         " with all data meeting design requirements."),
        ("{Subject}发表声明称，其[已于{Date}][在{Location}]{trigger}了一{mw}{Equipment}，这是该项目的关键一步。",
         "In a statement, {Subject} said it had {trigger} the {Equipment}[ at {Location}][ on {Date}],"
         " a key step for the program."),
        ("[{Date}，|近日，]{Subject}的一{mw}{Equipment}[在{Location}]完成首次{trigger}，相关数据正在分析之中。",
         "[On {Date}, |Recently, ]{Subject} {trigger} the {Equipment} for the first time[ at {Location}],"
         " and the data is being analyzed."),
    ),
    "Manoeuvre": (
        ("[{Date}，|据报道，]{Subject}[在{Area}]{trigger}了{Content}，参演兵力规模为近年来之最。",
         "[On {Date}, |According to reports, ]{Subject} {trigger} {Content}[ in {Area}],"
         " involving its largest force in recent years."),
        ("{Subject}宣布，其部队[自{Date}起][在{Area}]{trigger}了{Content}，为期约一周。",
         "In an announcement, {Subject} said its forces had {trigger} {Content}[ in {Area}]"
         "[ starting on {Date}], lasting about a week."),
        ("[{Date}，|近日，]{Subject}[在{Area}]{trigger}{Content}，重点演练指挥协同和快速反应能力。",
         "[On {Date}, |Recently, ]{Subject} {trigger} {Content}[ in {Area}],"
         " focusing on command coordination and rapid response."),
    ),
    "Deploy": (
        ("[{Date}，|据报道，]{Subject}[向{Location}]{trigger}了{Militaryforce}，以加强当地的防御力量。",
         "[On {Date}, |According to reports, ]{Subject} {trigger} {Militaryforce}[ to {Location}]"
         " to strengthen local defenses."),
        ("{Subject}发言人证实，[{Date}]已[向{Location}]{trigger}{Militaryforce}，执行轮换驻防任务。",
         "A spokesperson for {Subject} confirmed that it had {trigger} {Militaryforce}[ to {Location}]"
         "[ on {Date}] for a rotational mission."),
        ("据外媒报道，{Subject}[于{Date}][向{Location}]紧急{trigger}了{Militaryforce}，以应对地区局势变化。",
         "Foreign media reported that {Subject} urgently {trigger} {Militaryforce}[ to {Location}]"
         "[ on {Date}] in response to regional developments."),
    ),
    "Support": (
        ("[{Date}，|据报道，]{Subject}宣布向{Object}{trigger}{Materials}，以帮助其提升防务能力。",
         "[On {Date}, |According to reports, ]{Subject} announced that it had {trigger} {Materials}"
         " to {Object} to help strengthen its defense capabilities."),
        ("{Subject}[于{Date}]向{Object}{trigger}了{Materials}，这是双方防务合作的最新进展。",
         "In the latest sign of defense cooperation, {Subject} {trigger} {Materials} to {Object}"
         "[ on {Date}]."),
        ("有关官员表示，{Object}[已于{Date}]收到了{Subject}{trigger}的{Materials}。",
         "Officials said {Object} had received {Materials} {trigger} by {Subject}[ on {Date}]."),
    ),
    "Accident": (
        ("[{Date}，|据报道，]{Subject}一{mw}{Veh}[在{Location}附近]{trigger}，{Result}。",
         "[On {Date}, |According to reports, ]{Veh} operated by {Subject} {trigger}[ near {Location}],"
         " and {Result}."),
        ("{Subject}证实，其一{mw}{Veh}[于{Date}][在{Location}附近]{trigger}，{Result}。",
         "Officials from {Subject} confirmed that {Veh} {trigger}[ near {Location}][ on {Date}],"
         " and {Result}."),
        ("{Subject}发言人表示，一{mw}{Veh}[于{Date}][在{Location}附近]{trigger}，{Result}，具体原因仍在调查。",
         "A spokesperson for {Subject} said {Veh} {trigger}[ near {Location}][ on {Date}] and {Result};"
         " the cause is still under investigation."),
    ),
    "Exhibit": (
        ("[{Date}，|据报道，]{Subject}[在{Location}上]{trigger}了{Equipment}，吸引了众多参观者驻足。",
         "[On {Date}, |According to reports, ]{Subject} {trigger} the {Equipment}[ at {Location}],"
         " drawing crowds of visitors."),
        ("{Subject}[于{Date}][在{Location}上]首次{trigger}了{Equipment}的全尺寸模型。",
         "For the first time, {Subject} {trigger} a full-scale model of the {Equipment}[ at {Location}]"
         "[ on {Date}]."),
        ("据外媒报道，{Subject}[于{Date}][在{Location}上]{trigger}了最新型号的{Equipment}，并介绍了其主要性能。",
         "Foreign media reported that {Subject} {trigger} the latest version of the {Equipment}"
         "[ at {Location}][ on {Date}] and briefed visitors on its main capabilities."),
    ),
    "Conflict": (
        ("[{Date}，|据报道，]{Subject}[在{Location}]{trigger}了{Object}，造成设施严重损毁。",
         "[On {Date}, |According to reports, ]{Subject} {trigger} {Object}[ in {Location}],"
         " causing heavy damage."),
        ("当地官员称，{Subject}[于{Date}]使用无人机和火箭弹{trigger}了[位于{Location}的]{Object}。",
         "Local officials said {Subject} {trigger} {Object}[ in {Location}] with drones and rockets"
         "[ on {Date}]."),
        ("据外媒报道，[位于{Location}的]{Object}[于{Date}]遭到{Subject}{trigger}。",
         "Foreign media reported that {Object}[ in {Location}] was {trigger} by {Subject}[ on {Date}]."),
    ),
    "Injure": (
        ("[{Date}，|据报道，]{Subject}[在{Location}]执行巡逻任务时，有{Quantity}{trigger}。",
         "[On {Date}, |According to reports, ]{Quantity} from {Subject} were {trigger} during a patrol"
         "[ in {Location}]."),
        ("{Subject}发表声明证实，[{Date}|近日][在{Location}]发生的一次交火中，其{Quantity}{trigger}。",
         "In a statement, {Subject} confirmed that {Quantity} were {trigger} in an exchange of fire"
         "[ in {Location}][ on {Date}]."),
        ("据当地媒体报道，{Subject}[于{Date}][在{Location}]遭遇简易爆炸装置，造成{Quantity}{trigger}。",
         "Local media reported that {Quantity} from {Subject} were {trigger} by a roadside bomb"
         "[ in {Location}][ on {Date}]."),
    ),
}

#: Sentences that mention the first event's Subject again by its short name (coreference).
COREF_TEMPLATES = {
    "Experiment": ("{short}方面表示，将根据此次结果对相关系统进行改进。",
                   "{Short} said the results would be used to improve the system."),
    "Manoeuvre": ("{short}表示，此次演习提升了部队的快速反应能力。",
                  "{Short} said the exercise improved the rapid response capability of its forces."),
    "Deploy": ("{short}表示，相关部队将根据形势需要调整驻留时间。",
               "{Short} said the length of the stay would be adjusted as needed."),
    "Support": ("{short}表示，今后还将继续加强相关合作。",
                "{Short} said it would continue to strengthen cooperation."),
    "Accident": ("{short}已成立专门小组调查事故原因。",
                 "{Short} has set up a team to investigate the cause of the accident."),
    "Exhibit": ("{short}表示，希望借此吸引更多国际客户。",
                "{Short} said it hoped to attract more international customers."),
    "Conflict": ("{short}表示，此次行动达到了预期目的。",
                 "{Short} said the operation had achieved its objectives."),
    "Injure": ("{short}表示，正在对事件经过展开调查。",
               "{Short} said it was investigating the incident."),
}

#: Background sentences that open a document (no event).
OPENERS: tuple[tuple[str, str], ...] = (
    ("近年来，多国持续加大国防投入，地区安全形势备受关注。",
     "In recent years, many countries have kept raising defense spending, and the "
     "regional security situation has drawn close attention."),
    ("分析人士指出，当前地区安全环境正在发生深刻变化。",
     "Analysts note that the regional security environment is undergoing profound "
     "change."),
    ("据外国军事媒体近日报道，相关国家正在加快推进军队现代化建设。",
     "Foreign military media recently reported that the countries concerned are "
     "accelerating military modernization."),
    ("国际防务界近期密切关注该地区的军事动态。",
     "The international defense community has been closely following military "
     "developments in the region."),
    ("今年以来，多国军方的各类军事活动明显增多。",
     "Since the start of this year, military activity by armed forces in several "
     "countries has increased markedly."),
    ("在国防预算持续增长的背景下，武器装备更新换代步伐明显加快。",
     "Against the backdrop of rising defense budgets, the pace of weapons "
     "modernization has quickened markedly."),
)

#: Closing sentences (no event), by event type; "any" fits every type.
CLOSERS: dict[str, tuple[tuple[str, str], ...]] = {
    "Experiment": (
        ("此次试验旨在验证该型装备的关键性能指标。",
         "The trial was intended to verify the key performance parameters of the system."),
        ("该项目预计将于未来两年内完成全部研制工作。",
         "The program is expected to complete development within the next two years."),
    ),
    "Manoeuvre": (
        ("此次演习旨在提高参演部队的联合作战能力。",
         "The exercise was designed to improve the joint operational capability of the "
         "participating forces."),
        ("演习期间，各参演单位还就战术协同进行了交流。",
         "During the exercise, participating units also exchanged views on tactical "
         "coordination."),
    ),
    "Deploy": (
        ("这些部队预计将在当地驻扎数月。",
         "The troops are expected to remain in the area for several months."),
        ("此举被外界视为加强地区军事存在的重要信号。",
         "Observers see the move as a clear signal of a stronger regional military "
         "presence."),
    ),
    "Support": (
        ("这是今年以来同类援助中规模较大的一批。",
         "It is one of the largest packages of its kind this year."),
        ("双方还就后续培训和维护保障事宜达成一致。",
         "The two sides also agreed on follow-up training and maintenance support."),
    ),
    "Accident": (
        ("事故原因目前正在调查之中。",
         "The cause of the accident is under investigation."),
        ("这是该型装备今年以来发生的第二起事故。",
         "It was the second accident involving this type of equipment this year."),
    ),
    "Exhibit": (
        ("本届展会吸引了来自数十个国家的参展商和专业观众。",
         "This year's show attracted exhibitors and trade visitors from dozens of "
         "countries."),
        ("有分析认为，该装备有望在国际市场上获得更多订单。",
         "Some analysts believe the system could win more orders on the international "
         "market."),
    ),
    "Conflict": (
        ("目前尚无伤亡情况的详细报告。",
         "There were no detailed reports of casualties so far."),
        ("当地安全形势因此再度趋于紧张。",
         "The local security situation has become tense again as a result."),
    ),
    "Injure": (
        ("伤者已被送往附近医院接受治疗。",
         "The wounded have been taken to a nearby hospital for treatment."),
        ("相关部门已启动善后处理工作。",
         "The authorities have begun handling the aftermath."),
    ),
    "any": (
        ("有关细节尚未对外公布。",
         "Further details have not been made public."),
        ("相关方面暂未对此发表进一步评论。",
         "The parties concerned have not yet commented further."),
    ),
}

_OPT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")
_BREAK = re.compile(r"[。！？；\n]")
EXTRA_SLOTS = ("trigger", "mw", "Veh")


def _all_triggers() -> list[str]:
    trig = {zh for pairs in TRIGGERS.values() for zh, _ in pairs}
    trig |= {zh for pairs in EXPERIMENT_TRIGGERS.values() for zh, _ in pairs}
    trig |= {zh for pairs in ACCIDENT_TRIGGERS.values() for zh, _ in pairs}
    return sorted(trig)


ALL_TRIGGERS = _all_triggers()


def resolve(template: str, present: set[str]) -> str:
    """Expand ``[a|b]`` groups: keep the first alternative whose slots are all present."""
    def pick(m: re.Match) -> str:
        for alt in m.group(1).split("|"):
            if all(s in present for s in _SLOT.findall(alt)):
                return alt
        return ""
    return _OPT.sub(pick, template)


def render(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill slots; return the text and each slot's [start, end) character span."""
    out: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = last = 0
    for m in _SLOT.finditer(template):
        lit = template[last:m.start()]
        out.append(lit)
        pos += len(lit)
        value = values[m.group(1)]
        if m.group(1) in spans:
            raise ValueError(f"slot {m.group(1)} used twice in {template!r}")
        spans[m.group(1)] = (pos, pos + len(value))
        out.append(value)
        pos += len(value)
        last = m.end()
    out.append(template[last:])
    return "".join(out), spans


# --------------------------------------------------------------------------------------------
# Self-checks on the lexicons and templates (run at import, cheap).
# --------------------------------------------------------------------------------------------

def _lexicon_pairs() -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for _kind, zh, en, szh, sen in SUBJECTS:
        pairs.append((zh, en))
        if szh != "-":
            pairs.append((szh, sen))
    pairs += [(zh, en) for _c, zh, en in EQUIPMENT]
    for table in (TEST_SITES, SHOWS, AREAS, TRAINING_AREAS, DEPLOY_SITES, CONFLICT_SITES, AIR_BASES, PORTS,
                  CONTENTS, RECIPIENTS, MATERIALS, TARGETS, OPENERS):
        pairs += list(table)
    for table in (*RESULTS.values(), *CLOSERS.values()):
        pairs += list(table)
    for group in (*TRIGGERS.values(), *EXPERIMENT_TRIGGERS.values(), *ACCIDENT_TRIGGERS.values()):
        pairs += list(group)
    return pairs


def _self_check() -> None:
    seen: dict[str, str] = {}
    for zh, en in _lexicon_pairs():
        if seen.setdefault(zh, en) != en:
            raise AssertionError(f"{zh!r} maps to both {seen[zh]!r} and {en!r}")
    # No lexicon value or literal may contain a trigger word: every trigger in a text is annotated.
    literals = [zh for zh, _ in _lexicon_pairs() if zh not in ALL_TRIGGERS]
    for etype, temps in TEMPLATES.items():
        literals += [_SLOT.sub("", zh) for zh, _ in temps]
        literals.append(_SLOT.sub("", COREF_TEMPLATES[etype][0]))
    literals += [zh for _k, zh, _m, _e in VEHICLES] + [u for u, *_ in UNITS] + [p for p, *_ in PLATFORMS]
    literals += [zh for zh, _ in AID_ITEMS] + [zh for zh, _ in PEOPLE]
    for lit in literals:
        for trig in ALL_TRIGGERS:
            if trig in lit:
                raise AssertionError(f"trigger {trig!r} occurs in literal {lit!r}")
    for etype, temps in TEMPLATES.items():
        roles = EVENT_ROLES[etype]
        for zh_t, en_t in temps:
            for drop in ((), ("Date",), (roles[3],), ("Date", roles[3])):
                present = (set(roles) - set(drop)) | set(EXTRA_SLOTS)
                zh_r, en_r = resolve(zh_t, present), resolve(en_t, present)
                zh_slots, en_slots = _SLOT.findall(zh_r), _SLOT.findall(en_r)
                want = sorted(set(roles) - set(drop))
                if sorted(s for s in zh_slots if s in roles) != want or \
                        sorted(s for s in en_slots if s in roles) != want:
                    raise AssertionError(f"{etype} template {zh_t!r} / {en_t!r} misses roles with {drop}")
                if not en_r[0].isupper() or _BREAK.search(zh_r[:-1]) or not zh_r.endswith("。"):
                    raise AssertionError(f"{etype} template {zh_t!r} / {en_t!r} is malformed")


_self_check()


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

def sample_date(rng: random.Random) -> tuple[str, str]:
    month = rng.randrange(12)
    day = rng.randint(1, MONTH_DAYS[month])
    if rng.random() < 0.3:
        year = rng.randint(2018, 2024)
        return f"{year}年{month + 1}月{day}日", f"{MONTHS[month]} {day}, {year}"
    return f"{month + 1}月{day}日", f"{MONTHS[month]} {day}"


def sample_quantity(rng: random.Random) -> tuple[str, str]:
    p_zh, p_en = rng.choice(PEOPLE)
    n = rng.randint(2, 9) if rng.random() < 0.6 else rng.randint(10, 45)
    zh_n, en_n = (NUM_ZH[n], NUM_EN[n]) if n < 10 else (str(n), str(n))
    if rng.random() < 0.2:
        return f"至少{zh_n}名{p_zh}", f"at least {en_n} {p_en}"
    return f"{zh_n}名{p_zh}", f"{en_n} {p_en}"


def sample_force(rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    if r < 0.5:
        unit, mw, sing, plural = rng.choice(UNITS)
        n = rng.randint(1, 4)
        if n == 1:
            return f"一{mw}{unit}", sing
        return f"{NUM_ZH[n]}{mw}{unit}", f"{NUM_EN[n]} {plural}"
    if r < 0.75:
        n = rng.choice((300, 400, 500, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 4000))
        return f"约{n}名士兵", f"about {n:,} troops"
    noun, mw, plural = rng.choice(PLATFORMS)
    n = rng.randint(2, 12)
    zh_n, en_n = (NUM_ZH[n], NUM_EN[n]) if n < 10 else (str(n), str(n))
    return f"{zh_n}{mw}{noun}", f"{en_n} {plural}"


def sample_materials(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.3:
        item_zh, item_en = rng.choice(AID_ITEMS)
        n = rng.randint(1, 9)
        return f"价值{n}亿美元的{item_zh}", f"{item_en} worth ${n}00 million"
    return rng.choice(MATERIALS)


def sample_subject(rng: random.Random, etype: str) -> tuple[str, ...]:
    kind = rng.choice(SUBJECT_KINDS[etype])
    return rng.choice([s for s in SUBJECTS if s[0] == kind])


def equipment_categories(subject_en: str) -> tuple[str, ...]:
    """Equipment categories a subject plausibly tests or exhibits (navies: ships, not tanks)."""
    if any(w in subject_en for w in ("Navy", "Fleet", "Maritime")):
        return ("ship", "missile", "aircraft", "system")
    if any(w in subject_en for w in ("Air Force", "Aerospace Forces", "Air and Space")):
        return ("aircraft", "missile", "system")
    if any(w in subject_en for w in ("Army", "Ground", "Marine Corps")):
        return ("vehicle", "missile", "system", "aircraft")
    return tuple(MEASURE_WORD)


def sample_event(rng: random.Random, etype: str) -> dict:
    """Draw slot values for one event: {"slots": {slot: (zh, en)}, "subject": subject row}."""
    subj = sample_subject(rng, etype)
    slots: dict[str, tuple[str, str]] = {"Subject": (subj[1], subj[2])}
    if etype in ("Experiment", "Exhibit"):
        cats = equipment_categories(subj[2])
        cat, zh, en = rng.choice([e for e in EQUIPMENT if e[0] in cats])
        slots["Equipment"] = (zh, en)
        if etype == "Experiment":
            slots["trigger"] = rng.choice(EXPERIMENT_TRIGGERS[cat])
            slots["mw"] = (MEASURE_WORD[cat], "")
            sites = {"missile": TEST_SITES, "system": TEST_SITES, "aircraft": AIR_BASES, "ship": PORTS,
                     "vehicle": TRAINING_AREAS}
            slots["Location"] = rng.choice(sites[cat])
        else:
            slots["trigger"] = rng.choice(TRIGGERS[etype])
            slots["Location"] = rng.choice(SHOWS)
    elif etype == "Manoeuvre":
        slots["trigger"] = rng.choice(TRIGGERS[etype])
        slots["Content"] = rng.choice(CONTENTS)
        slots["Area"] = rng.choice(AREAS if rng.random() < 0.6 else TRAINING_AREAS)
    elif etype == "Deploy":
        slots["trigger"] = rng.choice(TRIGGERS[etype])
        slots["Militaryforce"] = sample_force(rng)
        slots["Location"] = rng.choice(DEPLOY_SITES)
    elif etype == "Support":
        slots["trigger"] = rng.choice(TRIGGERS[etype])
        slots["Object"] = rng.choice(RECIPIENTS)
        slots["Materials"] = sample_materials(rng)
    elif etype == "Accident":
        kind, vzh, vmw, ven = rng.choice(VEHICLES)
        slots["Veh"] = (vzh, ven)
        slots["mw"] = (vmw, "")
        slots["trigger"] = rng.choice(ACCIDENT_TRIGGERS[kind])
        slots["Result"] = rng.choice(RESULTS[kind])
        places = {"air": AIR_BASES, "sea": PORTS, "land": TRAINING_AREAS}
        slots["Location"] = rng.choice(places[kind])
    elif etype == "Conflict":
        slots["trigger"] = rng.choice(TRIGGERS[etype])
        slots["Object"] = rng.choice(TARGETS)
        slots["Location"] = rng.choice(CONFLICT_SITES)
    elif etype == "Injure":
        slots["trigger"] = rng.choice(TRIGGERS[etype])
        slots["Quantity"] = sample_quantity(rng)
        slots["Location"] = rng.choice(CONFLICT_SITES)
    else:  # pragma: no cover - EVENT_ROLES and this function must agree
        raise ValueError(etype)
    slots["Date"] = sample_date(rng)
    # Optional roles: Date, and the place role (Location / Area), each dropped ~20% of the time.
    roles = EVENT_ROLES[etype]
    if etype != "Support" and rng.random() < 0.2:
        del slots[roles[3]]
    if rng.random() < 0.2:
        del slots["Date"]
    return {"type": etype, "slots": slots, "subject": subj}


class TypeBag:
    """Draw event types in shuffled rounds of all 8, so types stay balanced."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.bag: list[str] = []

    def _refill(self) -> None:
        fresh = list(EVENT_ROLES)
        self.rng.shuffle(fresh)
        self.bag.extend(fresh)

    def draw(self, avoid: str | None = None) -> str:
        if not self.bag or all(t == avoid for t in self.bag):
            self._refill()
        for i, t in enumerate(self.bag):
            if t != avoid:
                return self.bag.pop(i)
        raise AssertionError("unreachable")


def build_event_sentence(rng: random.Random, ev: dict) -> tuple[str, str, dict]:
    slots = ev["slots"]
    zh_t, en_t = rng.choice(TEMPLATES[ev["type"]])
    present = set(slots)
    zh_r, en_r = resolve(zh_t, present), resolve(en_t, present)
    zh, spans = render(zh_r, {k: v[0] for k, v in slots.items()})
    en, _ = render(en_r, {k: v[1] for k, v in slots.items()})
    return zh, en, spans


def make_document(rng: random.Random, doc_id: str, types: list[str], want_coref: bool,
                  memory: dict[str, str]) -> tuple[dict, dict[str, str]] | None:
    """One attempt at a document; None when a constraint fails (caller retries)."""
    events = [sample_event(rng, t) for t in types]
    sentences: list[tuple[str, str]] = []
    placed: list[tuple[dict, int, dict]] = []  # (event, sentence index, spans)
    coref = []
    for i, ev in enumerate(events):
        zh, en, spans = build_event_sentence(rng, ev)
        placed.append((ev, len(sentences), spans))
        sentences.append((zh, en))
        subj = ev["subject"]
        if i == 0 and want_coref and subj[3] != "-":
            czh, cen = COREF_TEMPLATES[ev["type"]]
            short_en = subj[4][0].upper() + subj[4][1:]
            sentences.append((czh.format(short=subj[3]), cen.format(Short=short_en)))
            coref = [[{"role": "Subject", "text": subj[1]}, {"role": "Subject", "text": subj[3]}]]
    if want_coref and not coref:
        return None
    # Fillers: an optional opener and closers, so that the document has 2-4 sentences, 35-90 words.
    closers = list(CLOSERS[types[-1]]) + list(CLOSERS["any"])
    rng.shuffle(closers)
    opener = rng.choice(OPENERS) if rng.random() < 0.35 else None
    body = ([opener] if opener else []) + sentences
    offset_shift = 1 if opener else 0

    def words(sents: list[tuple[str, str]]) -> int:
        return len(" ".join(e for _, e in sents).split())

    tail: list[tuple[str, str]] = []
    if rng.random() < 0.5 or len(body) < 2:
        tail.append(closers.pop())
    while words(body + tail) < MIN_WORDS and len(body) + len(tail) < 4 and closers:
        if opener is None and rng.random() < 0.5:
            opener = rng.choice(OPENERS)
            body = [opener, *body]
            offset_shift = 1
        else:
            tail.append(closers.pop())
    sents = body + tail
    if not (2 <= len(sents) <= 4 and MIN_WORDS <= words(sents) <= MAX_WORDS):
        return None
    for zh, _ in sents:
        if not zh.endswith("。") or _BREAK.search(zh[:-1]):
            return None
    text = "".join(zh for zh, _ in sents)
    en_doc = " ".join(en for _, en in sents)
    starts = []
    pos = 0
    for zh, _ in sents:
        starts.append(pos)
        pos += len(zh)
    if segment_zh(text) != [zh for zh, _ in sents]:
        return None

    new_mem: dict[str, str] = {}
    event_list = []
    trigger_counts: Counter[str] = Counter()
    for ev, si, spans in placed:
        base = starts[si + offset_shift]
        slots = ev["slots"]
        ts, te = spans["trigger"]
        trig_zh, trig_en = slots["trigger"]
        trigger_counts[trig_zh] += 1
        new_mem[trig_zh] = trig_en
        args = []
        for role in EVENT_ROLES[ev["type"]]:
            if role not in slots:
                continue
            zh, en = slots[role]
            s, e = spans[role]
            # Unambiguous answers: each argument occurs exactly once in each language.
            if text.count(zh) != 1 or en_doc.count(en) != 1:
                return None
            args.append({"role": role, "text": zh, "offset": [base + s, base + e]})
            new_mem[zh] = en
        event_list.append({"event_type": ev["type"],
                           "trigger": {"text": trig_zh, "offset": [base + ts, base + te]},
                           "arguments": args})
    # Every trigger word in the text is an annotated trigger, and each annotated one occurs once.
    for trig in ALL_TRIGGERS:
        if text.count(trig) != trigger_counts.get(trig, 0):
            return None
    for group in coref:
        subj = events[0]["subject"]
        new_mem[subj[3]] = subj[4]
        if text.count(group[1]["text"]) != 1:
            return None
    for zh, en in sents:
        new_mem[zh] = en
    for zh, en in new_mem.items():
        if memory.get(zh, en) != en:
            return None
    doc = {"id": doc_id, "text": text, "event_list": event_list, "coref_arguments": coref}
    return doc, new_mem


def generate(seed: int, n_docs: int) -> tuple[list[dict], dict[str, str]]:
    rng = random.Random(seed)
    bag = TypeBag(rng)
    docs: list[dict] = []
    memory: dict[str, str] = {}
    for i in range(n_docs):
        doc_id = f"fx-{i + 1:04d}"
        first = bag.draw()
        types = [first, bag.draw(avoid=first)] if rng.random() < 0.4 else [first]
        want_coref = rng.random() < 0.17
        for attempt in range(1000):
            result = make_document(rng, doc_id, types, want_coref and attempt < 50, memory)
            if result is not None:
                break
        else:
            raise RuntimeError(f"could not build document {doc_id} with types {types}")
        doc, new_mem = result
        docs.append(doc)
        memory.update(new_mem)
    return docs, memory


# --------------------------------------------------------------------------------------------
# Validation and reporting
# --------------------------------------------------------------------------------------------

def validate(docs: list[dict], memory: dict[str, str], where: str) -> dict:
    """Check schema, offsets, memory coverage and verbatim English answers; return counts."""
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate document ids"
    per_type: Counter[str] = Counter()
    per_role: Counter[str] = Counter()
    per_pair: Counter[tuple[str, str]] = Counter()
    n_args = 0
    for i, raw in enumerate(docs):
        doc = parse_document(raw, f"{where} record {i}")
        sents = segment_zh(doc.text)
        assert 2 <= len(sents) <= 4, f"{doc.id}: {len(sents)} sentences"
        for s in sents:
            assert s in memory, f"{doc.id}: sentence not in memory: {s}"
        en_doc = " ".join(memory[s] for s in sents)
        for ev in doc.events:
            per_type[ev.event_type] += 1
            s, e = ev.trigger.offset
            assert doc.text[s:e] == ev.trigger.text, f"{doc.id}: trigger offset mismatch"
            assert ev.trigger.text in memory, f"{doc.id}: trigger not in memory"
            for arg in ev.arguments:
                s, e = arg.offset
                assert doc.text[s:e] == arg.text, f"{doc.id}: {arg.role} offset mismatch"
                assert arg.text in memory, f"{doc.id}: argument not in memory: {arg.text}"
                assert memory[arg.text] in en_doc, f"{doc.id}: {memory[arg.text]!r} not in English"
                per_role[arg.role] += 1
                per_pair[(ev.event_type, arg.role)] += 1
                n_args += 1
    for etype, roles in EVENT_ROLES.items():
        for role in roles:
            assert per_pair[(etype, role)] > 0, f"no {etype}/{role} argument"
    return {"documents": len(docs), "events": sum(per_type.values()), "arguments": n_args,
            "per_type": per_type, "per_role": per_role, "per_pair": per_pair,
            "with_coref": sum(1 for d in docs if d["coref_arguments"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--docs", type=int, default=360)
    ap.add_argument("--out-dir", type=Path, default=Path("data/raw"))
    args = ap.parse_args(argv)

    docs, memory = generate(args.seed, args.docs)
    counts = validate(docs, memory, FIXTURE_NAME)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fixture = json.dumps(docs, ensure_ascii=False, indent=1) + "\n"
    mem_text = json.dumps(memory, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    (args.out_dir / FIXTURE_NAME).write_text(fixture, encoding="utf-8")
    (args.out_dir / MEMORY_NAME).write_text(mem_text, encoding="utf-8")

    en_words = [len(" ".join(memory[s] for s in segment_zh(d["text"])).split()) for d in docs]
    print(f"documents: {counts['documents']}  events: {counts['events']}  "
          f"arguments (QA pairs): {counts['arguments']}  with coref: {counts['with_coref']}  "
          f"memory entries: {len(memory)}")
    print(f"English words per document: min {min(en_words)}, mean {sum(en_words) / len(en_words):.1f}, "
          f"max {max(en_words)}")
    print("per event type: " + ", ".join(f"{t} {counts['per_type'][t]}" for t in EVENT_ROLES))
    print("per role: " + ", ".join(f"{r} {n}" for r, n in sorted(counts["per_role"].items())))
    for etype, roles in EVENT_ROLES.items():
        print(f"  {etype}: " + ", ".join(f"{r} {counts['per_pair'][(etype, r)]}" for r in roles))
    print(f"wrote {args.out_dir / FIXTURE_NAME} and {args.out_dir / MEMORY_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
