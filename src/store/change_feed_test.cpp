// ChangeCursor: the position of a change-log reader (store/change_feed.hpp).
#include "store/change_feed.hpp"

#include <gtest/gtest.h>

namespace iothub::store {
namespace {

TEST(ChangeCursorTest, ParsesSnapshotsWithAndWithoutTransactionsInProgress) {
  auto idle = ChangeCursor::parse("750:750:");
  ASSERT_TRUE(idle.isOk()) << idle.status().toString();
  EXPECT_EQ(idle->xmin, 750u);
  EXPECT_EQ(idle->xmax, 750u);
  EXPECT_TRUE(idle->in_progress.empty());

  auto busy = ChangeCursor::parse("740:760:740,745,759");
  ASSERT_TRUE(busy.isOk()) << busy.status().toString();
  EXPECT_EQ(busy->xmin, 740u);
  EXPECT_EQ(busy->xmax, 760u);
  EXPECT_EQ(busy->in_progress, (std::vector<std::uint64_t>{740, 745, 759}));
}

TEST(ChangeCursorTest, PrintsWhatItParses) {
  for (const char* text :
       {"1:1:", "740:760:740,745,759", "18446744073709551615:18446744073709551615:"}) {
    auto cursor = ChangeCursor::parse(text);
    ASSERT_TRUE(cursor.isOk()) << text;
    EXPECT_EQ(cursor->toString(), text);
  }
  ChangeCursor built{.xmin = 5, .xmax = 9, .in_progress = {5, 8}};
  EXPECT_EQ(ChangeCursor::parse(built.toString()).value(), built);
}

TEST(ChangeCursorTest, RefusesMalformedText) {
  for (const char* text :
       {"", "1", "1:2", "a:2:", "1:b:", "3:2:", "1:5:0", "1:5:5", "1:5:3,2", "1:5:3,3", "1:5:3,",
        "1:5:,3", " 1:5:", "1:5:3 ", "-1:5:", "1:5:+3", "99999999999999999999:1:"}) {
    auto cursor = ChangeCursor::parse(text);
    EXPECT_FALSE(cursor.isOk()) << "'" << text << "'";
    EXPECT_EQ(cursor.code(), ErrorCode::ArgumentInvalid) << "'" << text << "'";
  }
}

// A reader has seen a transaction iff it had finished at the reader's snapshot: below xmin,
// or below xmax and not in progress. The next read asks for the others.
TEST(ChangeCursorTest, SawOnlyTransactionsThatHadFinished) {
  auto cursor = ChangeCursor::parse("100:110:100,104").value();
  EXPECT_TRUE(cursor.saw(1));
  EXPECT_TRUE(cursor.saw(99));
  EXPECT_FALSE(cursor.saw(100));  // running then: may commit later
  EXPECT_TRUE(cursor.saw(101));
  EXPECT_TRUE(cursor.saw(103));
  EXPECT_FALSE(cursor.saw(104));
  EXPECT_TRUE(cursor.saw(109));
  EXPECT_FALSE(cursor.saw(110));  // started after the snapshot
  EXPECT_FALSE(cursor.saw(5000));
}

// Rows below the prune horizon are gone: a reader still needs them iff its xmin is below
// the horizon (every transaction it has not seen has an id >= xmin).
TEST(ChangeCursorTest, NeedsRowsBelowTheHorizonOnlyWhenItsXminIsBelowIt) {
  auto cursor = ChangeCursor::parse("100:110:100,104").value();
  EXPECT_FALSE(cursor.needsRowsBelow(0));
  EXPECT_FALSE(cursor.needsRowsBelow(100));
  EXPECT_TRUE(cursor.needsRowsBelow(101));
  auto idle = ChangeCursor::parse("110:110:").value();
  EXPECT_FALSE(idle.needsRowsBelow(110));
  EXPECT_TRUE(idle.needsRowsBelow(111));
}

}  // namespace
}  // namespace iothub::store
